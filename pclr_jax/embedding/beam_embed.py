"""Embedding parts as an Apache Beam pipeline, for CPU fleets beyond one machine.

The pipeline is ``Create(part numbers) | Reshuffle | ParDo(embed the part)``: each Beam worker
loads the encoder once (``setup``), reads and prepares a part's chunks in its own process,
embeds them with the same :class:`~pclr_jax.embedding.pipeline.PartBuilder` as a local run and
writes the part file. So its parts, and the table assembled from them by the driver, equal a
local run's. The plan (the source's entries and counts) travels as a file in the parts folder,
not inside the pipeline graph, so a large cohort does not inflate the job description.

Workers must see the input files and the parts folder at the same paths as the driver (a shared
file system). Needs ``apache-beam`` (``pip install 'pclr-jax[beam]'``).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pclr_jax.embedding.parts import PartStore
from pclr_jax.embedding.pipeline import PartBuilder, chunk_tasks
from pclr_jax.embedding.plan import Plan
from pclr_jax.embedding.reading import InputSpec, prepare_chunk

PLAN_FILE = "plan.pickle"


class _EmbedPart(beam.DoFn):
    """Embeds and writes one part; yields its number."""

    def __init__(self, plan_file: str, spec: InputSpec, directory: str, load_encoder):
        self._plan_file = plan_file
        self._spec = spec
        self._directory = directory
        self._load_encoder = load_encoder

    def setup(self) -> None:
        with open(self._plan_file, "rb") as f:
            self._source, self._plan = pickle.load(f)
        self._encoder = self._load_encoder()
        self._store = PartStore(self._directory)

    def process(self, part: int):
        builder = PartBuilder(self._encoder)
        for task in chunk_tasks(self._source, self._plan, part):
            builder.add(prepare_chunk(self._spec, task))
        self._store.write(part, builder.table())
        yield part


def embed_parts_on_beam(
    source, plan: Plan, parts: Sequence[int], spec: InputSpec, store: PartStore, options
) -> None:
    """Embeds and writes ``parts`` on ``options.beam_runner`` (a
    :class:`~pclr_jax.embedding.to_table.RunOptions`: ``beam_flags`` and ``load_encoder``)."""
    if options.load_encoder is None:
        raise ValueError("a Beam run needs options.load_encoder, run on each worker")
    if not parts:
        return
    plan_file = store.directory / PLAN_FILE
    with open(plan_file, "wb") as f:
        pickle.dump((source, plan), f)
    embed = _EmbedPart(str(plan_file), spec, str(store.directory), options.load_encoder)
    pipeline_options = PipelineOptions(list(options.beam_flags))
    with beam.Pipeline(runner=options.beam_runner, options=pipeline_options) as pipeline:
        _ = (
            pipeline
            | "Parts" >> beam.Create(list(parts))
            | "Spread" >> beam.Reshuffle()
            | "Embed" >> beam.ParDo(embed)
        )
    plan_file.unlink()
