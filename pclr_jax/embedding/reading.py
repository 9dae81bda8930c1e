"""Reading and preparing one chunk of records, in a reader process or in this one.

A :class:`ChunkTask` names the records of one chunk (readers of the entries that hold them, and
the rows to read); :func:`prepare_chunk` reads them, prepares each for the model with
:func:`~pclr_jax.signals.preprocess.prepare_checked` and returns a :class:`PreparedChunk`: the ECGs
ready for the device, and the failures as plain tuples (exceptions do not cross processes
intact). Every record of the task is in exactly one of the two.

Imports neither JAX nor pyarrow, so reader processes start quickly.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np

from pclr_jax.signals.preprocess import prepare_checked
from pclr_jax.signals.records import ECGRecord, ECGValidationError


class EntryReader(Protocol):
    """Reads the records of one entry of a source (picklable: it travels to reader processes).

    Attributes:
        sample_id: the entry's id, for failures that concern rows of it (``<sample_id>:<row>``).
        path: where the entry comes from (a file; for reports).
    """

    sample_id: str
    path: str

    def read(self, start: int, stop: int) -> Iterator[ECGRecord | ECGValidationError]:
        """Records ``start .. stop - 1`` of the entry, failures yielded, not raised."""
        ...


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How a record becomes model input (the arguments of
    :func:`~pclr_jax.signals.preprocess.prepare_checked`).

    Attributes:
        n_samples: samples per ECG of the model's input.
        leads: the model's leads, in order.
        resample: ``'ml4h'`` or ``'antialias'``.
        expected_duration_s: the duration checked (s), or ``None`` for any.
        allow: checks that do not reject (:data:`~pclr_jax.signals.preprocess.ALLOWABLE_CHECKS`).
    """

    n_samples: int
    leads: tuple[str, ...]
    resample: str = "ml4h"
    expected_duration_s: float | None = 10.0
    allow: tuple[str, ...] = ()


class Failure(NamedTuple):
    """A record that failed (or, among ``allowed``, a check that was let through)."""

    position: int
    sample_id: str
    path: str
    reason: str
    message: str

    def error(self) -> ECGValidationError:
        """The failure as the exception :func:`prepare_checked` raised."""
        return ECGValidationError(
            self.message, record_id=self.sample_id, reason=self.reason, source=self.path
        )


def failure(position: int, error: ECGValidationError, path: str = "") -> Failure:
    """``error`` of the record at ``position`` as a :class:`Failure` (``path`` if it has none)."""
    return Failure(position, error.record_id, error.source or path, error.reason, str(error))


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """The records of one chunk: positions ``first ..`` in order, read as
    ``reader.read(start, stop)`` for each ``(reader, start, stop)`` of ``pieces``."""

    first: int
    pieces: tuple[tuple[EntryReader, int, int], ...]

    @property
    def n_records(self) -> int:
        return sum(stop - start for _, start, stop in self.pieces)


@dataclasses.dataclass
class PreparedChunk:
    """What :func:`prepare_chunk` made of a chunk.

    Attributes:
        positions: ``(k,)`` int64, the positions of the prepared records, ascending.
        sample_ids: their ids.
        ecgs: ``(k, n_samples, leads)`` float32 mV, the model's input.
        rejected: the records that failed, by position.
        allowed: the checks ``allow`` let through (their records are among the prepared).
        n_records: records in the chunk: ``k + len(rejected)``.
    """

    positions: np.ndarray
    sample_ids: list[str]
    ecgs: np.ndarray
    rejected: list[Failure]
    allowed: list[Failure]
    n_records: int


def _exactly(
    reader: EntryReader, start: int, stop: int
) -> Iterator[ECGRecord | ECGValidationError]:
    """``reader.read(start, stop)``, held to ``stop - start`` items: a file that changed since
    the plan was made (fewer rows) gives a ``'changed_file'`` failure per missing row."""
    read = 0
    for item in itertools.islice(reader.read(start, stop), stop - start):
        read += 1
        yield item
    for row in range(start + read, stop):
        record_id = f"{reader.sample_id}:{row}"
        yield ECGValidationError(
            f"record {record_id}: the file changed since the run started ({read} of "
            f"{stop - start} records found)",
            record_id=record_id,
            reason="changed_file",
            source=reader.path,
        )


def prepare_chunk(spec: InputSpec, task: ChunkTask) -> PreparedChunk:
    """Reads and prepares the records of ``task`` (see the module docstring)."""
    positions, ids, ecgs = [], [], []
    rejected: list[Failure] = []
    allowed: list[Failure] = []
    position = task.first
    for reader, start, stop in task.pieces:
        for item in _exactly(reader, start, stop):
            source = getattr(item, "source", "")
            try:
                if isinstance(item, ECGValidationError):
                    raise item
                prepared = prepare_checked(
                    item,
                    spec.n_samples,
                    spec.leads,
                    spec.resample,
                    spec.expected_duration_s,
                    allow=spec.allow,
                )
            except ECGValidationError as error:
                rejected.append(failure(position, error, source))
            else:
                allowed.extend(failure(position, error, source) for error in prepared.allowed)
                positions.append(position)
                ids.append(item.record_id)
                ecgs.append(prepared.ecg)
            position += 1
    shape = (len(ecgs), spec.n_samples, len(spec.leads))
    return PreparedChunk(
        positions=np.asarray(positions, np.int64),
        sample_ids=ids,
        ecgs=np.stack(ecgs) if ecgs else np.zeros(shape, np.float32),
        rejected=rejected,
        allowed=allowed,
        n_records=position - task.first,
    )
