"""Generating an :class:`~pclr_jax.data.builders.base.ECGBuilder` data set as an Apache Beam
pipeline, through tensorflow-datasets' own Beam support (``DownloadConfig(beam_runner=...)``).

Per split, the pipeline is::

    beam.Create(chunks of whole patients' tasks) | Reshuffle
      | ParDo(_PrepareChunk)  -> examples (key, example)  -> tfds's BeamWriter -> shards
                              -> 'side' tagged output     -> one scratch JSON-lines file
                                 (quarantine rows, copies found by content)

``_PrepareChunk`` runs the builder's own ``_iter_outcomes`` (in the worker, no process pool) and
:func:`~pclr_jax.data.builders.settle.settle_patient`, exactly as the process-pool path does, so
both write the same examples. An example's key is its task's position in the split (the split's
fixed order: patient, record); tfds's Beam writer, with shuffling disabled, writes examples in key
order, so example ``i`` is the ``i``-th written record on both paths. After the pipeline,
:func:`collect` reads the scratch files back in key order (``quarantine.csv``, content copies in
``duplicates.csv``) and builds each split's index from its finished shards.

Needs ``apache-beam`` (``pip install -e ".[beam]"``), not TensorFlow. Importing this module
imports Beam: the base class imports it only when a Beam runner is asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath

from pclr_jax.data.builders.settle import patient_spans, settle_patient
from pclr_jax.data.splits import SPLITS

CHUNK_RECORDS = 64
SCRATCH_DIR = "_beam_scratch"
SIDE_TAG = "side"
QUARANTINE = "quarantine"
DUPLICATE = "duplicate"
KIND = "_kind"
KEY = "_key"


def patient_chunks(
    tasks: list[dict[str, Any]], records: int = CHUNK_RECORDS
) -> list[tuple[int, list[dict[str, Any]]]]:
    """``(position of the first task, tasks)`` units of work: consecutive whole patients, about
    ``records`` tasks each (more when one patient has more)."""
    chunks, start = [], 0
    for _, stop in patient_spans(tasks):
        if stop - start >= records:
            chunks.append((start, tasks[start:stop]))
            start = stop
    if start < len(tasks):
        chunks.append((start, tasks[start:]))
    return chunks


class _PrepareChunk(beam.DoFn):
    """Prepares one chunk of tasks in a Beam worker with the builder's own reader."""

    def __init__(self, builder_cls: type[tfds.core.GeneratorBasedBuilder], config: Any, split: str):
        self._builder_cls = builder_cls
        self._config = config
        self._split = split
        self._builder: tfds.core.GeneratorBasedBuilder | None = None

    def setup(self) -> None:
        self._builder = self._builder_cls(config=self._config, workers=0)

    def process(self, chunk: tuple[int, list[dict[str, Any]]]) -> Iterator[Any]:
        first, tasks = chunk
        outcomes = list(self._builder._iter_outcomes(tasks))
        if len(outcomes) != len(tasks):
            raise RuntimeError(f"{len(outcomes)} outcomes for {len(tasks)} tasks")
        names = self._builder._feature_names()
        for start, stop in patient_spans(tasks):
            settled = settle_patient(
                tasks[start:stop], outcomes[start:stop], first + start, self._split, names
            )
            for kind, entries in (
                (QUARANTINE, settled.quarantined),
                (DUPLICATE, settled.duplicates),
            ):
                for key, entry in entries:
                    row = {KIND: kind, KEY: key, **entry}
                    yield beam.pvalue.TaggedOutput(SIDE_TAG, json.dumps(row))
            yield from settled.examples


class PrepareSplit(beam.PTransform):
    """The ``(key, example)`` PCollection of one split; writes its quarantine and content-copy
    rows to the builder's scratch directory as a side effect."""

    def __init__(self, builder: tfds.core.GeneratorBasedBuilder, split: str):
        super().__init__()
        self._chunks = patient_chunks(builder._split_tasks(split))
        config = builder.builder_config
        registered = type(builder).builder_configs.get(config.name) is config
        # A registered config travels by name: a worker's unpickled copy is another object, which
        # tfds refuses under a registered name.
        self._prepare = _PrepareChunk(type(builder), config.name if registered else config, split)
        self._side_file = os.fspath(scratch_dir(builder) / f"{split}.jsonl")

    def expand(self, pipeline):
        outputs = (
            pipeline
            | "Chunks" >> beam.Create(self._chunks)
            | "Spread" >> beam.Reshuffle()
            | "Prepare" >> beam.ParDo(self._prepare).with_outputs(SIDE_TAG, main="examples")
        )
        # Side rows are few (records that fail, copies): one list, one file per split.
        _ = (
            outputs[SIDE_TAG]
            | "CollectSide" >> beam.combiners.ToList()
            | "WriteSide" >> beam.Map(_write_lines, self._side_file)
        )
        return outputs.examples


def _write_lines(lines: list[str], path: str) -> None:
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    epath.Path(path).write_text("".join(line + "\n" for line in lines))


def scratch_dir(builder: tfds.core.GeneratorBasedBuilder) -> epath.Path:
    """Where the pipeline writes tagged outputs: inside tfds's temporary data directory, so it is
    on the same file system as the shards (a bucket on Dataflow)."""
    return epath.Path(builder.data_dir) / SCRATCH_DIR


def collect(builder: tfds.core.GeneratorBasedBuilder, directory: epath.Path) -> None:
    """After the pipeline: quarantine and content-copy rows in (split, key) order, and each
    split's index rows from its finished shards, into ``builder._run``; removes the scratch
    files."""
    run = builder._run
    splits = [s for s in SPLITS if (run.manifest["split"] == s).any()]
    splits += sorted(set(run.manifest["split"]) - set(SPLITS))
    scratch = directory / SCRATCH_DIR
    for split in splits:
        side = _read_side(scratch / f"{split}.jsonl")
        run.quarantined.extend(side[QUARANTINE])
        run.content_duplicates.extend(side[DUPLICATE])
        run.index_rows[split] = index_rows_from_shards(builder, split)
    scratch.rmtree()


def _read_side(path: epath.Path) -> dict[str, list[dict[str, Any]]]:
    """Quarantine and duplicate rows of one split, each in key order, hidden fields dropped."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    rows.sort(key=lambda row: row[KEY])
    side: dict[str, list[dict[str, Any]]] = {QUARANTINE: [], DUPLICATE: []}
    for row in rows:
        side[row[KIND]].append({k: v for k, v in row.items() if k not in (KIND, KEY)})
    return side


def index_rows_from_shards(
    builder: tfds.core.GeneratorBasedBuilder, split: str
) -> list[dict[str, Any]]:
    """Every example of a finished split, ``ecg`` left out, in example order."""
    features = builder.info.features
    rows = []
    for path in builder.info.splits[split].filepaths:
        reader = array_record_module.ArrayRecordReader(os.fspath(path))
        try:
            for start in range(0, reader.num_records(), 256):
                stop = min(start + 256, reader.num_records())
                for serialized in reader.read(list(range(start, stop))):
                    example = features.deserialize_example_np(serialized)
                    rows.append({k: _plain(v) for k, v in example.items() if k != "ecg"})
        finally:
            reader.close()
    return rows


def _plain(value: Any) -> Any:
    """A decoded feature as the process-pool path's index rows hold it (text as ``str``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value
