"""Ingestion plumbing shared by the data-set builders: the per-record :class:`Outcome`, the
preparation settings and an order-preserving, memory-bounded process-pool map.

Imports neither tensorflow-datasets nor JAX, so worker processes start quickly.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class PrepareSpec:
    """How source records become model inputs.

    Attributes:
        n_samples: samples per prepared ECG.
        duration_s: seconds of signal resampled to ``n_samples`` (``None``: the whole record).
        resample: :func:`~pclr_jax.signals.preprocess.prepare_ecg`'s method, ``'ml4h'`` or
        ``'antialias'``.
    """

    n_samples: int = 4096
    duration_s: float | None = 10.0
    resample: str = "ml4h"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of preparing one task.

    Attributes:
        record_id: the task's record id.
        ecg: ``(n_samples, 12)`` float16 mV in ``STANDARD_LEADS`` order, or ``None`` if rejected.
        sampling_rate: the source's sampling rate in Hz (NaN if unknown because the file is bad).
        reason: ``None`` for a prepared record, else a short tag (``ECGValidationError.reason``,
            e.g. ``'corrupt_file'``, ``'non_finite'``, ``'missing_lead'``, ``'too_short'``,
            ``'units'``).
        message: a human-readable explanation naming the record.
        fingerprint: ``(FINGERPRINT_SAMPLES, 12)`` float32, what copies of one recording are found
            by (:mod:`pclr_jax.data.copies`); ``None`` for a rejected record, or when the builder
            leaves it to be computed from ``ecg``.
    """

    record_id: str
    ecg: np.ndarray | None
    sampling_rate: float
    reason: str | None = None
    message: str = ""
    fingerprint: np.ndarray | None = None


def default_workers() -> int:
    """Worker processes for ingestion: the usable CPUs minus one for the writer (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def ordered_parallel_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    max_pending: int | None = None,
) -> Iterator[Any]:
    """``map(fn, items)`` in order, computed by ``workers`` processes (``0``: in this process).

    At most ``max_pending`` items (default ``4 * workers``) are in flight, so a slow consumer (the
    tfds writer) never makes results pile up in memory. Workers are started with ``spawn``, which
    is safe in processes that hold threads (JAX, tqdm); ``fn`` must be picklable (a module-level
    function or a ``functools.partial`` of one).
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    max_pending = max_pending or 4 * workers
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_pending:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
