"""Ingestion plumbing shared by the data-set builders: the per-record :class:`Outcome`, the
preparation settings and how many reader processes to start (the process-pool map itself is
:func:`pclr_jax.runtime.pool.ordered_parallel_map`).

Imports neither tensorflow-datasets nor JAX, so worker processes start quickly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pclr_jax.runtime.pool import usable_cpus


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
    return max(1, usable_cpus() - 1)
