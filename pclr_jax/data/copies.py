"""Copies of one recording found by content, within each patient.

A collection can hold one ECG twice, e.g. PTB-XL's 100 Hz and 500 Hz files of the same recording.
Kept as two ECGs of one patient they would become a positive pair (an ECG and a resampled copy of
itself), which teaches the encoder nothing about the patient and inflates retrieval. ``ecg_group``
in a manifest names such copies when the source says so; this module finds the rest by content.

Every prepared ECG gets a *fingerprint*: the validated record (leads in the standard order, mV)
resampled with an anti-aliasing filter to :data:`FINGERPRINT_SAMPLES` samples over the same span
as the prepared ECG (50 Hz for 10 s records), whatever its source rate. Two ECGs of one patient
are copies when the :func:`correlation` of their fingerprints (median over 1/10 windows, each lead
centred, all 12 leads pooled) is at least :data:`COPY_CORRELATION`. Copies form groups
transitively; each group keeps one record as an ``ecg_group`` would: the highest source sampling
rate, then the first in the split's order (patient, record id).

The threshold, measured with ``benchmarks/content_copies.py`` (see docs/data.md): the 53 PTB-XL
ECGs of ``shared/data/real_ecg_dev`` present at 100 and 500 Hz correlate at 0.9945 or more; the
4,274 pairs of different ECGs of one patient in PTB-XL (all 21,837 100 Hz records) at 0.957 or
less (99.9% below 0.81). 0.98 lies in the gap.

Imports neither tensorflow-datasets nor JAX: it runs in worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pclr_jax.signals.preprocess import resample_antialias

FINGERPRINT_SAMPLES = 500
WINDOWS = 10
COPY_CORRELATION = 0.98


def fingerprint(signal_mv: np.ndarray) -> np.ndarray:
    """``(FINGERPRINT_SAMPLES, leads)`` float32 from a ``(samples, leads)`` mV signal (any rate):
    anti-aliased polyphase resampling, then each lead centred on its mean."""
    resampled = resample_antialias(np.asarray(signal_mv, np.float64), FINGERPRINT_SAMPLES)
    return (resampled - resampled.mean(axis=0)).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two fingerprints: the median over :data:`WINDOWS` equal time windows of the
    correlation within each window (each lead centred in the window, all leads pooled:
    ``sum(a b) / sqrt(sum a^2 sum b^2)``, 0 when either is constant there).

    The median ignores a few windows where two files of one recording differ at the edges (PTB-XL's
    500 Hz files hold their last value over the final ~0.1 s of some records, where the 100 Hz
    files have signal), and per-window centring ignores slow baseline differences.
    """
    n = min(len(a), len(b))
    values = []
    for window in np.array_split(np.arange(n), WINDOWS):
        x = a[window].astype(np.float64)
        y = b[window].astype(np.float64)
        x, y = x - x.mean(axis=0), y - y.mean(axis=0)
        norm = float(np.sqrt(np.sum(x * x) * np.sum(y * y)))
        values.append(float(np.sum(x * y) / norm) if norm > 0 else 0.0)
    return float(np.median(values))


def copy_groups(
    fingerprints: Sequence[np.ndarray], threshold: float = COPY_CORRELATION
) -> list[list[int]]:
    """Groups of positions whose fingerprints correlate at ``threshold`` or more, closed
    transitively; each group in ascending order, groups ordered by their first position.
    Positions without a copy form no group."""
    parent = list(range(len(fingerprints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(fingerprints)):
        for j in range(i + 1, len(fingerprints)):
            if correlation(fingerprints[i], fingerprints[j]) >= threshold:
                parent[max(root(i), root(j))] = min(root(i), root(j))
    members: dict[int, list[int]] = {}
    for i in range(len(fingerprints)):
        members.setdefault(root(i), []).append(i)
    return [group for group in members.values() if len(group) > 1]


def keeper(group: Sequence[int], sampling_rates: Sequence[float]) -> int:
    """The position a group keeps: the highest ``sampling_rates[position]`` (NaN lowest), then
    the first position."""
    rates = [-np.inf if np.isnan(sampling_rates[i]) else float(sampling_rates[i]) for i in group]
    return group[int(np.argmax(rates))]
