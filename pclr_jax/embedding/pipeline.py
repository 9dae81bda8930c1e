"""Embedding parts: reader processes prepare chunks while this process runs the model.

``workers`` processes (:func:`~pclr_jax.runtime.pool.ordered_parallel_map`) read and prepare the
chunks of the parts in order (:func:`~pclr_jax.embedding.reading.prepare_chunk`), a few chunks
ahead of the device; this process stacks each part's ECGs into batches of the encoder's
``batch_size``, embeds them and writes the part (:class:`~pclr_jax.embedding.parts.PartStore`).
Batches are formed within a part, from its records in order, so a part's rows are the same
whatever the number of workers, and whether it was embedded here, after a resume, in another
process or on a Beam worker.

Memory: a few chunks per worker in flight, and one part's embeddings.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from pclr_jax.embedding.embedder import Encoder
from pclr_jax.embedding.parts import PartStore, part_table
from pclr_jax.embedding.plan import Plan
from pclr_jax.embedding.reading import ChunkTask, Failure, InputSpec, PreparedChunk, prepare_chunk
from pclr_jax.runtime.pool import ordered_parallel_map, usable_cpus
from pclr_jax.runtime.progress import Progress

# Records per chunk, the unit of a reader process: 32 ECGs of 4,096 x 12 float32 are 6 MiB.
CHUNK_RECORDS = 32
# On a CPU-only host the model itself needs the cores: reading and preparing a 10 s WFDB record
# costs about a fifth of the model's CPU time for it (pclr embed on 2 Zen 5 cores: ~210 records
# read per core-second against ~110 ECG/s embedded on both cores), so one reader per this many
# cores keeps up with the model.
CPU_CORES_PER_READER = 4


def default_workers(platform: str) -> int:
    """Reader processes by default: on an accelerator (``platform`` ``'gpu'``, ``'tpu'``) every
    core but the one that feeds the device; on the CPU one per :data:`CPU_CORES_PER_READER`
    cores (at least 1)."""
    cpus = usable_cpus()
    if platform == "cpu":
        return max(1, cpus // CPU_CORES_PER_READER)
    return max(1, cpus - 1)


class PartBuilder:
    """Collects one part's prepared chunks, embeds its ECGs in batches of the encoder's
    ``batch_size`` as they come, and gives the part's rows.

    Args:
        encoder: the model.
        strict: raise the first rejected record's error instead of keeping it.
    """

    def __init__(self, encoder: Encoder, strict: bool = False):
        self.encoder = encoder
        self.strict = strict
        self._waiting: list[np.ndarray] = []  # prepared ECGs not yet embedded
        self._embedded: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._ids: list[str] = []
        self._rejected: list[Failure] = []
        self._allowed: list[Failure] = []

    def add(self, chunk: PreparedChunk) -> None:
        """Takes the next chunk of the part (chunks in position order)."""
        if self.strict and chunk.rejected:
            raise chunk.rejected[0].error()
        self._positions.append(chunk.positions)
        self._ids.extend(chunk.sample_ids)
        self._rejected.extend(chunk.rejected)
        self._allowed.extend(chunk.allowed)
        self._waiting.append(chunk.ecgs)
        waiting = sum(len(e) for e in self._waiting)
        full = waiting - waiting % self.encoder.batch_size
        if full:
            ecgs = np.concatenate(self._waiting)
            self._embedded.append(self.encoder.embed(ecgs[:full]))
            self._waiting = [ecgs[full:]]

    def table(self) -> pa.Table:
        """The part's rows (:func:`~pclr_jax.embedding.parts.part_table`), the last batch
        embedded."""
        if self._waiting:
            ecgs = np.concatenate(self._waiting)
            self._embedded.append(self.encoder.embed(ecgs))
            self._waiting = []
        dim = self.encoder.embed_dim
        embeddings = np.concatenate([np.zeros((0, dim), np.float32), *self._embedded])
        positions = np.concatenate([np.zeros(0, np.int64), *self._positions])
        return part_table(positions, self._ids, embeddings, self._rejected, self._allowed)


def chunk_tasks(source, plan: Plan, part: int) -> list[ChunkTask]:
    """The :class:`ChunkTask` of each chunk of ``part``; ``source.reader(entry)`` gives an
    entry's :class:`~pclr_jax.embedding.reading.EntryReader`."""
    tasks = []
    for positions in plan.chunks(part, CHUNK_RECORDS):
        pieces = tuple((source.reader(s.entry), s.start, s.stop) for s in plan.spans(positions))
        tasks.append(ChunkTask(positions.start, pieces))
    return tasks


def prepared_chunks(
    spec: InputSpec, tasks: Iterable[ChunkTask], workers: int
) -> Iterator[PreparedChunk]:
    """:func:`prepare_chunk` of each task, in order, by ``workers`` processes (``0``: here),
    at most two chunks per worker ahead of the consumer."""
    work = functools.partial(prepare_chunk, spec)
    return ordered_parallel_map(work, tasks, workers, max_pending=2 * max(workers, 1))


def embed_parts(
    encoder: Encoder,
    source,
    plan: Plan,
    parts: Sequence[int],
    spec: InputSpec,
    store: PartStore,
    workers: int = 0,
    strict: bool = False,
    progress: Progress | None = None,
) -> None:
    """Embeds and writes ``parts`` of ``plan`` (see the module docstring).

    Raises the first rejected record's ``ECGValidationError`` when ``strict`` (the parts before
    its part are written).
    """
    tasks = (task for part in parts for task in chunk_tasks(source, plan, part))
    chunks = prepared_chunks(spec, tasks, workers)
    try:
        for part in parts:
            builder = PartBuilder(encoder, strict)
            for _ in plan.chunks(part, CHUNK_RECORDS):
                chunk = next(chunks)
                builder.add(chunk)
                if progress is not None:
                    progress.update(chunk.n_records)
            store.write(part, builder.table())
    finally:
        chunks.close()
