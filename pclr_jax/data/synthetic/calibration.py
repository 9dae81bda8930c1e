"""Model-free ECG statistics, computed identically on real and synthetic ECGs, to calibrate the
synthetic generator against PTB-XL (``scripts/calibrate_synthetic.py``, ``docs/data.md``).

Every ECG is first brought to :data:`RATE` (100 Hz, PTB-XL's low-rate files) over 10 s by FFT
resampling (:func:`scipy.signal.resample`), so both sides are measured on the same grid. Then, per
ECG (:func:`measure_ecg`):

=======================  ======================================================================
R peaks                  peaks of the summed squared 5-15 Hz band (Butterworth order 2, zero
                         phase) over the 12 leads, at least 0.3 s apart, above 20 % of that
                         signal's 99th percentile (:func:`detect_r_peaks`).
heart_rate_bpm           60 / median RR interval.
template                 median beat of each lead from -0.25 s to +0.45 s around the R peaks
                         after a 0.5 Hz high-pass, minus its mean from -0.10 to -0.06 s (the PR
                         segment, or the last diastole with AF): ``(70, 12)`` mV.
qrs_axis_deg             atan2(net area of aVF, net area of I) over the template's QRS window
                         (-0.05 to +0.05 s): the frontal-plane QRS axis.
qrs_amplitude_mv         mean over the 12 leads of the template's peak-to-peak in the QRS window.
t_amplitude_mv           mean over the 12 leads of the template's largest absolute value from
                         +0.15 to +0.45 s.
noise_mv                 median over leads of the robust (1.4826 MAD) standard deviation of the
                         second difference, divided by sqrt(6): the standard deviation of white
                         noise (a second difference of white noise has variance 6 sigma^2); QRS
                         samples are few enough for the MAD to ignore.
baseline_wander_mv       median over leads of the standard deviation of the 0.5 Hz low-passed
                         signal (Butterworth order 2, zero phase): a sinusoid of amplitude A well
                         below 0.5 Hz gives A / sqrt(2).
=======================  ======================================================================

Across a cohort of patients with two or more ECGs (:func:`cohort_statistics`):

* the hand-crafted representation of an ECG is its template on the eight independent leads
  (I, II, V1-V6), flattened (560 values, mV); distances are Euclidean;
* **retrieval top-1**: draws of ``gallery_patients`` patients with two ECGs each; every ECG queries
  the other ``2 gallery_patients - 1``; the fraction whose nearest neighbour is its own patient's
  other ECG, averaged over draws (chance ``1 / (2 gallery_patients - 1)``);
* **same-patient AUC**: the probability that two ECGs of one patient are closer than two ECGs of
  different patients (Mann-Whitney), and the ratio of the median distances;
* **between-visit spread** of heart rate, QRS axis and log QRS amplitude: the median absolute
  difference between two ECGs of one patient, beside the same across random different patients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import signal, stats

RATE = 100.0
DURATION_S = 10.0
N_SAMPLES = int(RATE * DURATION_S)
TEMPLATE_WINDOW_S = (-0.25, 0.45)
ISOELECTRIC_S = (-0.10, -0.06)
QRS_WINDOW_S = (-0.05, 0.05)
T_WINDOW_S = (0.15, 0.45)
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
REPRESENTATION_LEADS = (0, 1, 6, 7, 8, 9, 10, 11)  # I, II, V1-V6: the independent leads
SPREAD_TRAITS = ("heart_rate_bpm", "qrs_axis_deg", "log_qrs_amplitude")

_BAND = signal.butter(2, (5.0, 15.0), btype="bandpass", fs=RATE, output="sos")
_HIGH_PASS = signal.butter(2, 0.5, btype="highpass", fs=RATE, output="sos")
_LOW_PASS = signal.butter(2, 0.5, btype="lowpass", fs=RATE, output="sos")


def _offset(seconds: float) -> int:
    return round(seconds * RATE)


TEMPLATE_SAMPLES = _offset(TEMPLATE_WINDOW_S[1]) - _offset(TEMPLATE_WINDOW_S[0])


def to_calibration_grid(ecg: np.ndarray, duration_s: float = DURATION_S) -> np.ndarray:
    """``(S, 12)`` mV over ``duration_s`` -> ``(1000, 12)`` float64 at 100 Hz (FFT resampling of
    the first 10 s)."""
    if duration_s < DURATION_S:
        raise ValueError(f"need at least {DURATION_S} s, got {duration_s} s")
    keep = round(len(ecg) * DURATION_S / duration_s)
    ecg = np.asarray(ecg[:keep], np.float64)
    return ecg if len(ecg) == N_SAMPLES else signal.resample(ecg, N_SAMPLES, axis=0)


def detect_r_peaks(ecg: np.ndarray) -> np.ndarray:
    """Sample indices of the R peaks of a ``(1000, 12)`` 100 Hz ECG (see the module docstring)."""
    energy = np.square(signal.sosfiltfilt(_BAND, ecg, axis=0)).sum(axis=1)
    threshold = 0.2 * np.percentile(energy, 99)
    peaks, _ = signal.find_peaks(energy, height=threshold, distance=_offset(0.3))
    return peaks


@dataclasses.dataclass(frozen=True)
class ECGMeasurement:
    """What :func:`measure_ecg` finds in one ECG (NaN / None where fewer than 3 beats fit)."""

    template: np.ndarray | None  # (70, 12) mV
    heart_rate_bpm: float
    qrs_axis_deg: float
    qrs_amplitude_mv: float
    t_amplitude_mv: float
    noise_mv: float
    baseline_wander_mv: float
    beats: int


def noise_level(ecg: np.ndarray) -> float:
    """White-noise standard deviation estimate (mV) of a ``(S, leads)`` ECG: median over leads of
    1.4826 MAD(second difference) / sqrt(6)."""
    second = np.diff(ecg, n=2, axis=0)
    mad = np.median(np.abs(second - np.median(second, axis=0)), axis=0)
    return float(np.median(1.4826 * mad / np.sqrt(6.0)))


def baseline_wander_level(ecg: np.ndarray) -> float:
    """Median over leads of the standard deviation of the 0.5 Hz low-passed ``(1000, leads)``
    ECG (mV)."""
    return float(np.median(signal.sosfiltfilt(_LOW_PASS, ecg, axis=0).std(axis=0)))


def median_beat(ecg: np.ndarray, peaks: np.ndarray) -> np.ndarray | None:
    """``(70, leads)`` median beat of a high-passed 100 Hz ECG around ``peaks``, zero on the
    isoelectric window; None with fewer than 3 whole beats."""
    start = peaks + _offset(TEMPLATE_WINDOW_S[0])
    whole = start[(start >= 0) & (start + TEMPLATE_SAMPLES <= len(ecg))]
    if len(whole) < 3:
        return None
    beats = ecg[whole[:, None] + np.arange(TEMPLATE_SAMPLES)]
    template = np.median(beats, axis=0)
    lo, hi = (_offset(s - TEMPLATE_WINDOW_S[0]) for s in ISOELECTRIC_S)
    return template - template[lo:hi].mean(axis=0)


def measure_ecg(ecg: np.ndarray, duration_s: float = DURATION_S) -> ECGMeasurement:
    """Measures one ``(S, 12)`` mV ECG recorded over ``duration_s`` (module docstring)."""
    ecg = to_calibration_grid(ecg, duration_s)
    noise, wander = noise_level(ecg), baseline_wander_level(ecg)
    peaks = detect_r_peaks(ecg)
    template = median_beat(signal.sosfiltfilt(_HIGH_PASS, ecg, axis=0), peaks)
    if template is None:
        nan = float("nan")
        return ECGMeasurement(None, nan, nan, nan, nan, noise, wander, len(peaks))
    origin = _offset(-TEMPLATE_WINDOW_S[0])
    qrs = template[origin + _offset(QRS_WINDOW_S[0]) : origin + _offset(QRS_WINDOW_S[1]) + 1]
    t_wave = template[origin + _offset(T_WINDOW_S[0]) : origin + _offset(T_WINDOW_S[1])]
    area = qrs.sum(axis=0)
    return ECGMeasurement(
        template=template,
        heart_rate_bpm=float(60.0 * RATE / np.median(np.diff(peaks))),
        qrs_axis_deg=float(np.degrees(np.arctan2(area[LEADS.index("aVF")], area[0]))),
        qrs_amplitude_mv=float(np.ptp(qrs, axis=0).mean()),
        t_amplitude_mv=float(np.abs(t_wave).max(axis=0).mean()),
        noise_mv=noise,
        baseline_wander_mv=wander,
        beats=len(peaks),
    )


def measure_cohort(
    ecgs: Sequence[np.ndarray], patient_ids: Sequence, duration_s: float = DURATION_S
) -> tuple[pd.DataFrame, np.ndarray]:
    """Measures every ECG. Returns one row per ECG (patient_id and the scalar measurements; rows
    with fewer than 3 whole beats are dropped and counted in ``attrs['dropped']``) and the
    ``(N, 560)`` representations of the kept rows."""
    rows, representations, dropped = [], [], 0
    for ecg, patient_id in zip(ecgs, patient_ids, strict=True):
        m = measure_ecg(ecg, duration_s)
        if m.template is None:
            dropped += 1
            continue
        row = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "template"}
        rows.append({"patient_id": patient_id, **row})
        representations.append(m.template[:, REPRESENTATION_LEADS].ravel())
    table = pd.DataFrame(rows)
    table["log_qrs_amplitude"] = np.log(table["qrs_amplitude_mv"])
    table.attrs["dropped"] = dropped
    return table, np.asarray(representations).reshape(len(rows), -1)


def _pairs(patient_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(P, 2)`` row indices: two random ECGs of every patient that has two or more."""
    pairs = []
    for rows in pd.Series(np.arange(len(patient_ids))).groupby(patient_ids).groups.values():
        if len(rows) >= 2:
            pairs.append(rng.choice(np.asarray(rows), 2, replace=False))
    return np.asarray(pairs).reshape(-1, 2)


def retrieval_top1(representations: np.ndarray) -> float:
    """``representations`` ``(2P, D)``, rows ``2i`` and ``2i + 1`` from patient ``i``: the fraction
    of rows whose nearest other row (Euclidean) is their patient's other ECG."""
    sq = np.square(representations).sum(axis=1)
    distance = sq[:, None] + sq[None, :] - 2.0 * representations @ representations.T
    np.fill_diagonal(distance, np.inf)
    partner = np.arange(len(representations)) ^ 1
    return float(np.mean(distance.argmin(axis=1) == partner))


def cohort_statistics(
    table: pd.DataFrame,
    representations: np.ndarray,
    gallery_patients: int = 200,
    draws: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """The calibration statistics of a measured cohort (module docstring)."""
    rng = np.random.default_rng(seed)
    ids = table["patient_id"].to_numpy()
    pairs = _pairs(ids, rng)
    if len(pairs) < gallery_patients:
        raise ValueError(
            f"{len(pairs)} patients with two measurable ECGs, fewer than the gallery's"
            f" {gallery_patients}"
        )
    top1 = [
        retrieval_top1(representations[rng.choice(pairs, gallery_patients, replace=False).ravel()])
        for _ in range(draws)
    ]
    same = np.linalg.norm(representations[pairs[:, 0]] - representations[pairs[:, 1]], axis=1)
    shift = 1 + rng.integers(0, len(pairs) - 1, len(pairs))  # another patient for every patient
    other = pairs[(np.arange(len(pairs)) + shift) % len(pairs), 1]
    different = np.linalg.norm(representations[pairs[:, 0]] - representations[other], axis=1)
    auc = stats.mannwhitneyu(different, same).statistic / (len(same) * len(different))
    out = {
        "patients": float(len(pairs)),
        "ecgs": float(len(table)),
        "dropped_ecgs": float(table.attrs.get("dropped", 0)),
        "retrieval_top1": float(np.mean(top1)),
        "retrieval_chance": 1.0 / (2 * gallery_patients - 1),
        "same_patient_auc": float(auc),
        "same_over_different_distance": float(np.median(same) / np.median(different)),
    }
    for trait in SPREAD_TRAITS:
        values = table[trait].to_numpy()
        within = values[pairs[:, 0]] - values[pairs[:, 1]]
        between = values[pairs[:, 0]] - values[other]
        if trait == "qrs_axis_deg":  # angles: the shorter way round
            within, between = ((d + 180.0) % 360.0 - 180.0 for d in (within, between))
        out[f"{trait}_within"] = float(np.median(np.abs(within)))
        out[f"{trait}_between"] = float(np.median(np.abs(between)))
    for level in ("heart_rate_bpm", "qrs_amplitude_mv", "t_amplitude_mv"):
        out[f"{level}_median"] = float(table[level].median())
    for level in ("noise_mv", "baseline_wander_mv"):
        out[f"{level}_median"] = float(table[level].median())
        out[f"{level}_p90"] = float(table[level].quantile(0.9))
    return out
