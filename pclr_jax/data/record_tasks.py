"""Reading and preparing source records in worker processes, for the file-based builders.

A *task* is one manifest row as a plain dict: ``record_id``, ``path`` and what its reader needs.
Readers turn a task into an :class:`~pclr_jax.signals.records.ECGRecord` (WFDB through
:func:`pclr_jax.signals.records.read_wfdb`; one ECG of an HDF5 or ``.npy`` array by row);
:func:`prepare_task` applies :func:`pclr_jax.signals.preprocess.prepare_ecg` and returns an
:class:`~pclr_jax.data.ingest.Outcome` that carries the failure reason instead of raising.
Imports neither tensorflow-datasets nor JAX, so worker processes start quickly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import h5py
import numpy as np

from pclr_jax.data import copies
from pclr_jax.data.ingest import Outcome, PrepareSpec
from pclr_jax.runtime.pool import chunked, ordered_parallel_map
from pclr_jax.signals.leads import STANDARD_LEADS
from pclr_jax.signals.preprocess import ECGValidationError, prepare_ecg
from pclr_jax.signals.records import ECGRecord, read_wfdb

Task = dict[str, Any]
Reader = Callable[[Task], ECGRecord]

# Largest finite float16 value: a prepared ECG is stored as float16 mV.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def read_task(task: Task) -> ECGRecord:
    """Dispatches on ``task['format']``: ``'wfdb'``, ``'hdf5'`` or ``'npy'``."""
    readers = {"wfdb": read_wfdb_task, "hdf5": read_hdf5_row_task, "npy": read_npy_row_task}
    if task["format"] not in readers:
        raise ValueError(f"record {task['record_id']}: unknown format {task['format']!r}")
    return readers[task["format"]](task)


def read_wfdb_task(task: Task) -> ECGRecord:
    """A WFDB record; ``task['path']`` is the record path without extension."""
    path = os.fspath(task["path"])
    if not os.path.exists(path + ".hea"):
        raise FileNotFoundError(f"record {task['record_id']}: no header {path}.hea")
    return dataclasses.replace(read_wfdb(path), record_id=str(task["record_id"]))


@functools.lru_cache(maxsize=4)
def _open_hdf5(path: str) -> h5py.File:
    return h5py.File(path, "r")


def read_hdf5_row_task(task: Task) -> ECGRecord:
    """One ECG of an HDF5 array: ``task['path']``, ``hdf5_dataset`` (an ``(N, samples, leads)``
    array), ``row``, ``sampling_rate`` (Hz), optional ``lead_names`` (default the standard 12 in
    order), ``units`` (default mV) and ``trim_zero_padding`` (drop all-zero samples at both ends,
    as CODE-15% pads 7 s and 10 s exams to 4096 samples)."""
    path = os.fspath(task["path"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"record {task['record_id']}: no file {path}")
    signal = np.asarray(_open_hdf5(path)[task["hdf5_dataset"]][int(task["row"])], np.float32)
    return _array_record(signal, task)


def read_npy_row_task(task: Task) -> ECGRecord:
    """One ECG of a ``.npy`` file: ``(samples, leads)``, or ``(N, samples, leads)`` with
    ``task['row']``; ``sampling_rate`` (Hz), optional ``lead_names`` and ``units`` as for HDF5."""
    path = os.fspath(task["path"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"record {task['record_id']}: no file {path}")
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    row = task.get("row")
    if array.ndim == 3:
        if row is None or (isinstance(row, float) and np.isnan(row)):
            raise ValueError(f"{path} holds {array.shape[0]} ECGs; the manifest gives no row")
        array = array[int(row)]
    return _array_record(np.asarray(array, np.float32), task)


def _array_record(signal: np.ndarray, task: Task) -> ECGRecord:
    if signal.ndim != 2:
        raise ValueError(
            f"record {task['record_id']}: expected (samples, leads), got {signal.shape}"
        )
    if task.get("trim_zero_padding"):
        active = np.flatnonzero(np.any(signal != 0, axis=1))
        signal = signal[active[0] : active[-1] + 1] if len(active) else signal[:0]
    lead_names = task.get("lead_names") or STANDARD_LEADS
    if isinstance(lead_names, str):
        lead_names = lead_names.split()
    return ECGRecord(
        record_id=str(task["record_id"]),
        signal=signal,
        lead_names=tuple(lead_names),
        sampling_rate=float(task["sampling_rate"]),
        units=task.get("units") or "mV",
        source=os.fspath(task["path"]),
    )


def prepare_record(record: ECGRecord, spec: PrepareSpec) -> np.ndarray:
    """``(n_samples, 12)`` float16 mV from a record; raises ECGValidationError.

    Beyond :func:`~pclr_jax.signals.preprocess.prepare_ecg`'s checks, rejects values that float16
    cannot
    hold (reason ``'units'``: ``|x| > 65504 mV`` means the signal is not in mV).
    """
    ecg = prepare_ecg(
        record,
        n_samples=spec.n_samples,
        resample=spec.resample,
        expected_duration_s=spec.duration_s,
    )
    peak = float(np.max(np.abs(ecg))) if ecg.size else 0.0
    if not peak <= FLOAT16_MAX:
        raise ECGValidationError(
            f"record {record.record_id}: peak |value| {peak:.3g} mV does not fit float16; "
            "is the signal in mV?",
            record_id=record.record_id,
            reason="units",
        )
    return ecg.astype(np.float16)


def record_fingerprint(record: ECGRecord, spec: PrepareSpec) -> np.ndarray:
    """The record's :func:`~pclr_jax.data.copies.fingerprint`: its validated mV signal over the
    span ``spec`` prepares, anti-aliased to ``FINGERPRINT_SAMPLES`` samples whatever the source
    rate (so the 100 Hz and 500 Hz files of one ECG give nearly equal fingerprints)."""
    signal = prepare_ecg(
        record,
        n_samples=copies.FINGERPRINT_SAMPLES,
        resample="antialias",
        expected_duration_s=spec.duration_s,
    )
    return copies.fingerprint(signal)


def prepare_task(reader: Reader, spec: PrepareSpec, task: Task) -> Outcome:
    """Reads and prepares one task; a bad record gives an :class:`Outcome` with its reason.

    ``ECGValidationError`` carries its own reason; a missing file is ``'missing_file'``; other
    errors while reading (a truncated or unreadable file, a header that does not match the data)
    are ``'corrupt_file'``. Only errors raised by the reader are caught: a bug in preparation
    still propagates.
    """
    record_id = str(task["record_id"])
    try:
        record = reader(task)
    except ECGValidationError as error:
        return Outcome(record_id, None, float("nan"), error.reason, str(error))
    except FileNotFoundError as error:
        return Outcome(record_id, None, float("nan"), "missing_file", str(error))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as error:
        message = f"record {record_id} ({task.get('path', '')}): {type(error).__name__}: {error}"
        return Outcome(record_id, None, float("nan"), "corrupt_file", message)
    try:
        ecg = prepare_record(record, spec)
    except ECGValidationError as error:
        return Outcome(record_id, None, float(record.sampling_rate), error.reason, str(error))
    fingerprint = record_fingerprint(record, spec)
    return Outcome(record_id, ecg, float(record.sampling_rate), fingerprint=fingerprint)


def prepare_tasks(reader: Reader, spec: PrepareSpec, tasks: Sequence[Task]) -> list[Outcome]:
    """:func:`prepare_task` over a chunk of tasks (one unit of work for a worker process)."""
    return [prepare_task(reader, spec, task) for task in tasks]


def iter_outcomes(
    reader: Reader,
    spec: PrepareSpec,
    tasks: Sequence[Task],
    workers: int,
    chunk_size: int = 16,
) -> Iterator[Outcome]:
    """One :class:`Outcome` per task, in task order, prepared by ``workers`` processes."""
    work = functools.partial(prepare_tasks, reader, spec)
    for outcomes in ordered_parallel_map(work, chunked(tasks, chunk_size), workers):
        yield from outcomes
