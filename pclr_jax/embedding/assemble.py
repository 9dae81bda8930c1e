"""The output of an embedding run, assembled from its finished parts
(:mod:`pclr_jax.embedding.parts`), one part in memory at a time.

Three files, each written under a temporary name and renamed when complete:

* the table (``.csv``, ``.tsv`` or ``.parquet``): ``sample_id, latent_0 .. latent_{D-1}``, one
  row per embedded record in input order, exactly as ``pandas.DataFrame.to_csv`` /
  ``to_parquet`` write it;
* ``<stem>.rejected.csv``: :data:`REJECTED_COLUMNS`, one row per rejected record, in input
  order;
* ``<stem>.allowed.csv`` (with ``--allow``): the same columns, one row per check let through.

Sample ids are checked for repeats here, over the whole run, whichever process or worker
embedded them: an embedded record whose id an earlier embedded record already has is rejected
as ``'duplicate_id'`` naming the earlier one's file. The check keeps 16 bytes per record in
memory (a 64-bit hash and a position); only ids whose hashes collide are compared as text.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pclr_jax.embedding.parts import ALLOWED, EMBEDDED, PART_COLUMNS, REJECTED, PartStore
from pclr_jax.embedding.reading import Failure
from pclr_jax.signals.records import ECGValidationError

REJECTED_COLUMNS = ("sample_id", "path", "reason", "message")
OUTPUT_SUFFIXES = (".csv", ".tsv", ".parquet")


@dataclasses.dataclass
class Summary:
    """The counts of an assembled run.

    Attributes:
        records: records read (positions of the plan).
        embedded: rows of the table.
        rejected: rejected records by reason; ``embedded + sum(rejected.values()) == records``.
        allowed: checks let through, by reason.
        allowed_records: records embedded despite a failed check.
    """

    records: int
    embedded: int = 0
    rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    allowed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    allowed_records: int = 0


def _rows(table: pa.Table, kind: str) -> pa.Table:
    return table.filter(pc.equal(table["kind"], kind))


def find_duplicates(store: PartStore, n_parts: int) -> dict[int, int]:
    """``{position: position of the first record with its id}`` for every embedded record whose
    sample id an earlier embedded record has (positions in input order)."""
    hashes, positions = [], []
    for part in range(n_parts):
        rows = _rows(store.read(part, ["position", "kind", "sample_id"]), EMBEDDED)
        ids = rows["sample_id"].to_numpy(zero_copy_only=False).astype(object)
        hashes.append(pd.util.hash_array(ids))
        positions.append(rows["position"].to_numpy())
    hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    positions = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    candidates = set(positions[order[same]].tolist()) | set(positions[order[same + 1]].tolist())
    if not candidates:
        return {}
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for part in range(n_parts):
        rows = _rows(store.read(part, ["position", "kind", "sample_id"]), EMBEDDED)
        for position, sample_id in zip(
            rows["position"].to_pylist(), rows["sample_id"].to_pylist(), strict=True
        ):
            if position not in candidates:
                continue
            if sample_id in first:
                repeats[position] = first[sample_id]
            else:
                first[sample_id] = position
    return repeats


def _failures(rows: pa.Table) -> list[Failure]:
    columns = [rows[name].to_pylist() for name in Failure._fields]
    return [Failure(*values) for values in zip(*columns, strict=True)]


def _duplicate(position: int, sample_id: str, first: int, path_of: Callable[[int], str]) -> Failure:
    error = ECGValidationError(
        f"sample id already given by {path_of(first)} in this run",
        record_id=sample_id,
        reason="duplicate_id",
        source=path_of(position),
    )
    return Failure(position, sample_id, error.source, error.reason, str(error))


def _repeated(
    rows: pa.Table, repeats: dict[int, int], path_of: Callable[[int], str]
) -> list[Failure]:
    """The embedded rows of a part whose ids were given before, as ``'duplicate_id'``."""
    embedded = _rows(rows, EMBEDDED)
    return [
        _duplicate(position, sample_id, repeats[position], path_of)
        for position, sample_id in zip(
            embedded["position"].to_pylist(), embedded["sample_id"].to_pylist(), strict=True
        )
        if position in repeats
    ]


def _failures_frame(failures: list[Failure]) -> pd.DataFrame:
    rows = [(f.sample_id, f.path, f.reason, f.message) for f in failures]
    return pd.DataFrame(rows, columns=list(REJECTED_COLUMNS))


def _table_frame(ids: list[str], embeddings: np.ndarray) -> pd.DataFrame:
    columns = [f"latent_{i}" for i in range(embeddings.shape[1])]
    frame = pd.DataFrame(embeddings, columns=columns)
    frame.insert(0, "sample_id", pd.Series(ids, dtype=str))  # str even when empty
    return frame


class _TableWriter:
    """Appends frames of equal columns to a ``.csv``, ``.tsv`` or ``.parquet`` file (a Parquet
    row group per non-empty frame); a file that got no rows holds the columns alone."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._parquet: pq.ParquetWriter | None = None
        self._empty: pd.DataFrame | None = None
        self._text = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.path.suffix == ".parquet":
            self._empty = frame.iloc[:0]
            if len(frame):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if self._parquet is None:
                    self._parquet = pq.ParquetWriter(self.path, table.schema)
                self._parquet.write_table(table)
            return
        first = self._text is None
        if first:
            self._text = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
        sep = "\t" if self.path.suffix == ".tsv" else ","
        frame.to_csv(self._text, sep=sep, index=False, header=first)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._empty is not None:
            self._empty.to_parquet(self.path, index=False)
        if self._text is not None:
            self._text.close()


def _part_outputs(
    rows: pa.Table, dim: int, repeats: dict[int, int], path_of: Callable[[int], str]
) -> tuple[pd.DataFrame, list[Failure], list[Failure]]:
    """One part's table rows, rejected records (repeated ids included) and allowed checks."""
    embedded = _rows(rows, EMBEDDED)
    positions = embedded["position"].to_pylist()
    ids = embedded["sample_id"].to_pylist()
    keep = np.array([p not in repeats for p in positions], bool)
    vectors = embedded["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    frame = _table_frame([i for i, k in zip(ids, keep, strict=True) if k], vectors[keep])
    rejected = _failures(_rows(rows, REJECTED)) + _repeated(rows, repeats, path_of)
    allowed = [f for f in _failures(_rows(rows, ALLOWED)) if f.position not in repeats]
    return frame, sorted(rejected), allowed


def first_failure(
    store: PartStore, n_parts: int, repeats: dict[int, int], path_of: Callable[[int], str]
) -> Failure | None:
    """The rejected record (a repeated id included) with the lowest position, or ``None``."""
    for part in range(n_parts):
        rows = store.read(part, [c for c in PART_COLUMNS if c != "embedding"])
        rejected = _failures(_rows(rows, REJECTED)) + _repeated(rows, repeats, path_of)
        if rejected:
            return min(rejected)
    return None


def assemble(
    store: PartStore,
    n_parts: int,
    n_records: int,
    dim: int,
    path_of: Callable[[int], str],
    output: pathlib.Path,
    rejected_path: pathlib.Path,
    allowed_path: pathlib.Path | None,
    strict: bool = False,
) -> Summary:
    """Writes the output files from parts ``0 .. n_parts - 1`` (see the module docstring).

    Args:
        dim: the embeddings' width (``latent_0 .. latent_{dim-1}``).
        path_of: position -> the file (or data set) the record came from, for reports.
        allowed_path: where the allowed checks go, or ``None`` not to write them.
        strict: raise the first rejected record's :class:`ECGValidationError` (a repeated id
            included) instead of writing anything.
    """
    repeats = find_duplicates(store, n_parts)
    if strict and (found := first_failure(store, n_parts, repeats, path_of)) is not None:
        raise found.error()
    summary = Summary(n_records)
    paths = [output, rejected_path] + ([allowed_path] if allowed_path else [])
    temporary = {p: p.with_name(f".{p.stem}.{os.getpid()}.tmp{p.suffix}") for p in paths}
    table = _TableWriter(temporary[output])
    reports = [_TableWriter(temporary[p]) for p in paths[1:]]
    try:
        _write_outputs(store, n_parts, dim, repeats, path_of, table, reports, summary)
        if summary.embedded + sum(summary.rejected.values()) != n_records:
            raise RuntimeError(
                f"bookkeeping error: {n_records} records in, {summary.embedded} embedded, "
                f"{sum(summary.rejected.values())} rejected"
            )
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    for path in paths:
        os.replace(temporary[path], path)
    return summary


def _write_outputs(
    store: PartStore,
    n_parts: int,
    dim: int,
    repeats: dict[int, int],
    path_of: Callable[[int], str],
    table: _TableWriter,
    reports: list[_TableWriter],
    summary: Summary,
) -> None:
    """Streams every part into the table and the reports (rejected, then allowed if asked),
    counting into ``summary``; closes the writers."""
    try:
        table.write(_table_frame([], np.zeros((0, dim), np.float32)))
        for writer in reports:
            writer.write(_failures_frame([]))
        for part in range(n_parts):
            frame, rejected, allowed = _part_outputs(store.read(part), dim, repeats, path_of)
            table.write(frame)
            reports[0].write(_failures_frame(rejected))
            if len(reports) > 1:
                reports[1].write(_failures_frame(allowed))
            summary.embedded += len(frame)
            summary.rejected.update(f.reason for f in rejected)
            summary.allowed.update(f.reason for f in allowed)
            summary.allowed_records += len({f.position for f in allowed})
    finally:
        for writer in [table, *reports]:
            writer.close()
