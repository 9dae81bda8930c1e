"""An embedding run from a source of records to the output table: ``pclr embed``'s engine.

:func:`embed_to_table` plans the run (:class:`~pclr_jax.embedding.plan.Plan`), starts or
continues it in ``<output>.parts/`` (:class:`~pclr_jax.embedding.parts.PartStore`), embeds the
parts not yet written -- here with reader processes (:mod:`~pclr_jax.embedding.pipeline`), or as
an Apache Beam pipeline (:mod:`~pclr_jax.embedding.beam_embed`) -- and assembles the output
(:mod:`~pclr_jax.embedding.assemble`).

Several processes (``jax.distributed``, started as for training: every process runs the same
command) each embed the parts ``p`` with ``p % process_count == process_index`` into the same
parts folder, which must be on storage they all see; process 0 then assembles the one output.

A *source* is any object with ``counts`` (records per entry, ``(entries,)`` int64),
``reader(entry)`` (an :class:`~pclr_jax.embedding.reading.EntryReader`), ``empty`` (entries
that hold no record, for the report) and ``fingerprint()`` (a JSON-able dict that changes when
the records would): :class:`~pclr_jax.embedding.inputs.FileSource`, or
:class:`pclr_jax.data.prepared_source.PreparedSource` for a prepared data set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable

import jax
import numpy as np

from pclr_jax import __version__
from pclr_jax.embedding.assemble import Summary, assemble
from pclr_jax.embedding.embedder import Encoder
from pclr_jax.embedding.parts import PartStore, parts_directory
from pclr_jax.embedding.pipeline import default_workers, embed_parts
from pclr_jax.embedding.plan import PART_RECORDS, Plan
from pclr_jax.embedding.reading import InputSpec
from pclr_jax.runtime.progress import Progress
from pclr_jax.runtime.storage import as_path, check_shared
from pclr_jax.signals.records import ECGValidationError

# A progress line every this many ECGs when stderr is not a terminal.
LOG_EVERY_ECGS = 1000


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out (none of these changes the output).

    Attributes:
        workers: reader processes (``0``: read in this process; ``None``:
            :func:`~pclr_jax.embedding.pipeline.default_workers`).
        part_records: positions per part (a resumed run must use the same).
        strict: stop at the first rejected record, writing no output.
        write_allowed: write ``<stem>.allowed.csv``.
        beam_runner: run the parts as an Apache Beam pipeline on this runner.
        beam_flags: Beam pipeline options, ``--key=value``.
        load_encoder: for Beam: a picklable function that returns the encoder on a worker.
    """

    workers: int | None = None
    part_records: int = PART_RECORDS
    strict: bool = False
    write_allowed: bool = False
    beam_runner: str | None = None
    beam_flags: tuple[str, ...] = ()
    load_encoder: Callable[[], Encoder] | None = None


@dataclasses.dataclass
class RunReport:
    """What :func:`embed_to_table` did.

    Attributes:
        summary: the output's counts (``None`` on processes other than 0).
        resumed_records: records found embedded by an earlier, interrupted run.
        empty: the source's entries that hold no record (e.g. ``.npy`` files of 0 rows).
    """

    summary: Summary | None
    resumed_records: int
    empty: list[str]


def output_paths(output: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """``(table, <stem>.rejected.csv, <stem>.allowed.csv)`` of an output table path."""
    output = pathlib.Path(output)
    return (
        output,
        output.with_name(output.stem + ".rejected.csv"),
        output.with_name(output.stem + ".allowed.csv"),
    )


def weights_fingerprint(path: str) -> str:
    """A digest of the weights' file names, sizes and modification times (a file, or every file
    of a directory), not of where they are."""
    digest = hashlib.sha256()
    root = pathlib.Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        stat = file.stat()
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        digest.update(f"{name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run_settings(encoder: Encoder, source, spec: InputSpec, plan: Plan) -> dict:
    """What a continued run must share with the run it continues (``run.json``)."""
    return {
        "pclr_jax": __version__,
        "weights": weights_fingerprint(encoder.source),
        "output_layer": encoder.output,
        "embed_dim": encoder.embed_dim,
        "batch_size": encoder.batch_size,
        "input": dataclasses.asdict(spec),
        "source": source.fingerprint(),
        "records": plan.n_records,
        "part_records": plan.part_records,
        "processes": jax.process_count(),
    }


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _start(store: PartStore, settings: dict) -> None:
    """Starts or continues the run in ``store``. Every process checks the settings of a run
    found there (all of them raise alike); process 0 writes a new one's."""
    if jax.process_count() > 1:
        store.directory.parent.mkdir(parents=True, exist_ok=True)
        check_shared(as_path(store.directory.parent))
    store.start(settings, create=jax.process_index() == 0)
    _barrier("pclr embed: run started")


def _embed_here(
    encoder: Encoder,
    source,
    plan: Plan,
    mine: list[int],
    done: set[int],
    spec: InputSpec,
    store: PartStore,
    options: RunOptions,
) -> None:
    """Embeds this process's parts not yet ``done`` with reader processes, reporting progress."""
    process, processes = jax.process_index(), jax.process_count()
    workers = options.workers
    if workers is None:
        workers = default_workers(jax.default_backend())
    total = sum(len(plan.part_positions(p)) for p in mine)
    resumed = sum(len(plan.part_positions(p)) for p in mine if p in done)
    desc = "embedding" if processes == 1 else f"embedding (process {process})"
    # With several processes a rejected record stops the run at assembly, in process 0, after
    # every process has written its parts (none is left waiting for the others).
    stop_early = options.strict and processes == 1
    todo = [p for p in mine if p not in done]
    with Progress(desc, total=total, unit="ECG", every=LOG_EVERY_ECGS, initial=resumed) as progress:
        if resumed:
            progress.write(
                f"continuing the run in {store.directory}: {resumed:,} of {total:,} records "
                "were embedded before"
            )
        embed_parts(encoder, source, plan, todo, spec, store, workers, stop_early, progress)


def embed_to_table(
    encoder: Encoder,
    source,
    spec: InputSpec,
    output: str | os.PathLike,
    options: RunOptions = RunOptions(),
) -> RunReport:
    """Embeds every record of ``source`` into ``output`` (``.csv``, ``.tsv`` or ``.parquet``)
    and its reports, continuing the unfinished run of the same settings in ``<output>.parts/``
    if there is one (see the module docstring).

    Raises:
        SettingsMismatch: ``<output>.parts/`` holds a run started with other settings.
        ECGValidationError: with ``options.strict``, the first rejected record (nothing is
            written, and the parts folder is removed).
        ValueError: a Beam run in several ``jax.distributed`` processes.
    """
    process, processes = jax.process_index(), jax.process_count()
    if options.beam_runner and processes > 1:
        raise ValueError("a Beam run is started from one process, not from a jax.distributed job")
    table, rejected_path, allowed_path = output_paths(output)
    plan = Plan(source.counts, options.part_records)
    store = PartStore(parts_directory(table))
    _start(store, run_settings(encoder, source, spec, plan))
    done = store.done()
    mine = [p for p in range(plan.n_parts) if p % processes == process]
    try:
        if options.beam_runner:
            from pclr_jax.embedding.beam_embed import embed_parts_on_beam

            todo = [p for p in mine if p not in done]
            embed_parts_on_beam(source, plan, todo, spec, store, options)
        else:
            _embed_here(encoder, source, plan, mine, done, spec, store, options)
        _barrier("pclr embed: parts written")
        summary = None
        if process == 0:
            missing = sorted(set(range(plan.n_parts)) - store.done())
            if missing:
                raise RuntimeError(f"parts {missing[:10]} of {store.directory} were not written")

            def path_of(position: int) -> str:
                return source.reader(int(plan.entries_of(np.array([position]))[0])).path

            summary = assemble(
                store,
                plan.n_parts,
                plan.n_records,
                encoder.embed_dim,
                path_of,
                table,
                rejected_path,
                allowed_path if options.write_allowed else None,
                options.strict,
            )
            store.remove()
    except ECGValidationError:
        if options.strict:
            store.remove()
        raise
    resumed = sum(len(plan.part_positions(p)) for p in done)
    return RunReport(summary, resumed, list(source.empty))
