"""From an :class:`~pclr_jax.signals.records.ECGRecord` to model input: ``(n_samples, leads)``
float32 mV.

:func:`prepare_ecg` selects and reorders the leads the model wants (extra leads are dropped only
after the wanted ones were found), checks the record, converts it to mV and resamples the whole
record to ``n_samples``. Every check failure raises :class:`ECGValidationError` naming the record
and, where it applies, the lead.

Resampling methods
------------------
``'ml4h'`` (default; what the released PCLR models expect)
    Linear interpolation of each lead, the record's first and last samples mapped onto the first
    and last output samples: ``np.interp(linspace(0, 1, n_samples), linspace(0, 1, samples),
    lead)``. This is exactly ml4h's ``model_zoo/PCLR/preprocess_ecg.py`` (10 s at any rate ->
    4,096 samples). Downsampling this way aliases content above the new Nyquist frequency, and
    the time scale depends on the source rate: the last sample of 10 s is at 9.99 s at 100 Hz
    but 9.998 s at 500 Hz, both mapped onto output sample 4095, so two copies of one ECG at
    those rates drift apart by up to 8 ms (about 3 output samples) towards the end.
``'antialias'``
    ``scipy.signal.resample_poly`` by the reduced ratio ``n_samples / samples`` (a Kaiser-windowed
    FIR low-pass at the lower of the two Nyquist frequencies; edges padded by linear
    extrapolation, so a baseline offset does not droop). Output sample ``k`` sits at input time
    ``k * samples / n_samples`` samples, i.e. the grid starts at the first sample and keeps the
    sample period (the ml4h grid instead stretches by ``(samples - 1) / (n_samples - 1)``); the two
    grids differ by under one input sample.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence

import numpy as np

from pclr_jax.signals.leads import STANDARD_LEADS, lead_indices, normalize_lead_name
from pclr_jax.signals.records import ECGRecord, ECGValidationError, millivolts_per_unit

__all__ = [
    "RESAMPLE_METHODS",
    "ECGValidationError",
    "ALLOWABLE_CHECKS",
    "PreparedECG",
    "prepare_checked",
    "prepare_ecg",
    "resample_antialias",
    "resample_ml4h",
    "select_leads",
    "to_millivolts",
]

RESAMPLE_METHODS = ("ml4h", "antialias")

# Checks (all in mV and seconds); see prepare_ecg.
DURATION_TOLERANCE_S = 0.5
FLAT_PEAK_TO_PEAK_MV = 0.01
MAX_TYPICAL_PEAK_TO_PEAK_MV = 20.0
MIN_SAMPLES = 16
# Checks a user may let through on purpose (``pclr embed --allow``), by their rejection reason:
# flat leads, an amplitude that looks like uV (unknown units stay errors), and a duration outside
# the expected window (``too_short`` / ``too_long``; fewer than MIN_SAMPLES samples stays an
# error). NaN/inf values, missing leads and unreadable files cannot be embedded at all.
ALLOWABLE_CHECKS = ("flat_lead", "units", "too_short", "too_long")


def resample_ml4h(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """ml4h's resampling: ``(samples, leads)`` -> ``(n_samples, leads)`` float64 by linear
    interpolation over the whole record, first and last samples aligned."""
    source = np.linspace(0.0, 1.0, signal.shape[0])
    target = np.linspace(0.0, 1.0, n_samples)
    return np.stack([np.interp(target, source, lead) for lead in signal.T], axis=1)


def resample_antialias(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """Anti-aliased polyphase resampling of ``(samples, leads)`` to ``(n_samples, leads)`` float64
    with ``scipy.signal.resample_poly`` (see the module docstring for the time grid)."""
    samples = signal.shape[0]
    if samples == n_samples:
        return np.array(signal, dtype=np.float64)
    # Imported here: scipy.signal takes about a second to import, which every reader process of
    # pclr embed would pay at start-up for a method most runs do not use.
    from scipy import signal as sps

    common = math.gcd(n_samples, samples)
    up, down = n_samples // common, samples // common
    out = sps.resample_poly(np.asarray(signal, np.float64), up, down, axis=0, padtype="line")
    return out[:n_samples]


_RESAMPLERS = {"ml4h": resample_ml4h, "antialias": resample_antialias}


def select_leads(record: ECGRecord, leads: Sequence[str] = STANDARD_LEADS) -> np.ndarray:
    """The columns of ``record.signal`` for ``leads``, in that order (names matched after
    :func:`~pclr_jax.signals.leads.normalize_lead_name`); other leads are dropped.

    Raises :class:`ECGValidationError` ``'missing_lead'`` naming the first absent lead, or
    ``'bad_shape'`` if the signal is not ``(samples, len(lead_names))`` or a lead is duplicated.
    """
    signal = np.asarray(record.signal)
    if signal.ndim != 2 or signal.shape[1] != len(record.lead_names):
        raise ECGValidationError(
            f"signal of shape {signal.shape} does not match {len(record.lead_names)} lead names",
            record_id=record.record_id,
            reason="bad_shape",
        )
    try:
        columns = lead_indices(record.lead_names, leads)
    except KeyError as error:
        lead = error.args[0]
        raise ECGValidationError(
            f"record {record.record_id}: lead {lead} is missing (leads: "
            f"{' '.join(record.lead_names)})",
            record_id=record.record_id,
            reason="missing_lead",
            lead=lead,
        ) from error
    except ValueError as error:
        raise ECGValidationError(
            str(error), record_id=record.record_id, reason="bad_shape"
        ) from error
    return signal[:, columns]


def to_millivolts(signal: np.ndarray, units: str, record_id: str) -> np.ndarray:
    """``signal`` scaled from ``units`` to mV (float64); unknown units raise ``'units'``."""
    try:
        scale = millivolts_per_unit(units)
    except KeyError as error:
        raise ECGValidationError(
            f"unknown unit {units!r}", record_id=record_id, reason="units"
        ) from error
    return np.asarray(signal, np.float64) * scale


def _check_rate_and_length(record: ECGRecord, samples: int) -> None:
    rate = float(record.sampling_rate)
    if not (math.isfinite(rate) and rate > 0):
        raise ECGValidationError(
            f"invalid sampling rate {record.sampling_rate!r} Hz",
            record_id=record.record_id,
            reason="bad_sampling_rate",
        )
    if samples < MIN_SAMPLES:
        raise ECGValidationError(
            f"only {samples} samples (at least {MIN_SAMPLES} needed)",
            record_id=record.record_id,
            reason="too_short",
        )


def _check_duration(record: ECGRecord, samples: int, expected_s: float | None, tol_s: float):
    rate = float(record.sampling_rate)
    duration = samples / rate
    if expected_s is not None and abs(duration - expected_s) > tol_s:
        raise ECGValidationError(
            f"record {record.record_id}: {duration:.3g} s ({samples} samples at {rate:g} Hz), "
            f"expected {expected_s:g} +/- {tol_s:g} s (disable the duration check to resample "
            "the whole record anyway)",
            record_id=record.record_id,
            reason="too_short" if duration < expected_s else "too_long",
        )


def _check_finite(mv: np.ndarray, record_id: str, leads: Sequence[str]) -> None:
    finite = np.isfinite(mv).all(axis=0)
    if not finite.all():
        lead = normalize_lead_name(leads[int(np.argmin(finite))])
        count = int((~np.isfinite(mv[:, int(np.argmin(finite))])).sum())
        raise ECGValidationError(
            f"record {record_id}: lead {lead} has {count} NaN/inf samples",
            record_id=record_id,
            reason="non_finite",
            lead=lead,
        )


def _check_flat(mv: np.ndarray, record_id: str, leads: Sequence[str]) -> None:
    peak_to_peak = np.ptp(mv, axis=0)
    flat = np.flatnonzero(peak_to_peak < FLAT_PEAK_TO_PEAK_MV)
    if len(flat):
        names = [normalize_lead_name(leads[int(i)]) for i in flat]
        spreads = [f"{n} ({peak_to_peak[i]:.3g} mV)" for n, i in zip(names, flat, strict=True)]
        described = ", ".join(spreads)
        raise ECGValidationError(
            f"record {record_id}: lead{'s' if len(flat) > 1 else ''} {described} "
            f"{'are' if len(flat) > 1 else 'is'} flat (peak-to-peak < {FLAT_PEAK_TO_PEAK_MV} mV)",
            record_id=record_id,
            reason="flat_lead",
            lead=names[0],
        )


def _check_amplitude(mv: np.ndarray, record_id: str) -> None:
    # 1st-99th percentile range per lead, median over leads: a real ECG is a few mV at most.
    robust = float(np.median(np.percentile(mv, 99, axis=0) - np.percentile(mv, 1, axis=0)))
    if robust > MAX_TYPICAL_PEAK_TO_PEAK_MV:
        raise ECGValidationError(
            f"record {record_id}: typical lead amplitude {robust:.4g} mV (median over leads of "
            f"the 1-99 percentile range) exceeds {MAX_TYPICAL_PEAK_TO_PEAK_MV:g} mV; the values "
            "look like uV labelled as mV",
            record_id=record_id,
            reason="units",
        )


@dataclasses.dataclass
class PreparedECG:
    """:func:`prepare_checked`'s result: ``ecg`` ``(n_samples, leads)`` float32 mV and the
    failed checks that ``allow`` let through (empty when every check passed)."""

    ecg: np.ndarray
    allowed: list[ECGValidationError]


def prepare_checked(
    record: ECGRecord,
    n_samples: int = 4096,
    leads: Sequence[str] = STANDARD_LEADS,
    resample: str = "ml4h",
    expected_duration_s: float | None = 10.0,
    duration_tolerance_s: float = DURATION_TOLERANCE_S,
    allow: Collection[str] = (),
) -> PreparedECG:
    """Model input from one record: ``(n_samples, len(leads))`` float32 in mV, and the failed
    checks that ``allow`` let through.

    Steps, in order: select ``leads`` (reordered; any other lead dropped), check the sampling rate
    and duration (``samples / sampling_rate`` within ``duration_tolerance_s`` of
    ``expected_duration_s``; ``None`` accepts any duration), convert to mV, check the values, and
    resample the whole record to ``n_samples`` with ``resample`` (``'ml4h'`` or ``'antialias'``,
    see the module docstring).

    Raises :class:`ECGValidationError` with ``reason``: ``'missing_lead'``, ``'bad_shape'``,
    ``'bad_sampling_rate'``, ``'too_short'`` (fewer than 16 samples, or shorter than expected),
    ``'too_long'``, ``'units'`` (unknown unit, or a median 1-99 percentile range above 20 mV: uV
    labelled as mV), ``'non_finite'`` (NaN or inf in a lead), ``'flat_lead'`` (peak-to-peak
    < 0.01 mV). A check named in ``allow`` (:data:`ALLOWABLE_CHECKS`: ``'flat_lead'``,
    ``'units'`` for the amplitude check, ``'too_short'``/``'too_long'`` for the duration check)
    does not raise: its error is returned in ``allowed`` and the record is prepared anyway.
    """
    unknown = sorted(set(allow) - set(ALLOWABLE_CHECKS))
    if unknown:
        raise ValueError(f"checks {unknown} cannot be allowed; allowable: {ALLOWABLE_CHECKS}")
    if resample not in _RESAMPLERS:
        raise ValueError(f"resample must be one of {RESAMPLE_METHODS}, got {resample!r}")
    allowed: list[ECGValidationError] = []

    def check(function, *args) -> None:
        try:
            function(*args)
        except ECGValidationError as error:
            if error.reason not in allow:
                raise
            allowed.append(error)

    selected = select_leads(record, leads)
    _check_rate_and_length(record, selected.shape[0])
    check(_check_duration, record, selected.shape[0], expected_duration_s, duration_tolerance_s)
    mv = to_millivolts(selected, record.units, record.record_id)
    _check_finite(mv, record.record_id, leads)
    check(_check_flat, mv, record.record_id, leads)
    check(_check_amplitude, mv, record.record_id)
    return PreparedECG(_RESAMPLERS[resample](mv, n_samples).astype(np.float32), allowed)


def prepare_ecg(record: ECGRecord, *args, **kwargs) -> np.ndarray:
    """Model input from one record, ``(n_samples, len(leads))`` float32 in mV: the ``ecg`` of
    :func:`prepare_checked` (same arguments)."""
    return prepare_checked(record, *args, **kwargs).ecg
