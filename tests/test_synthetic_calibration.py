"""The calibration statistics against values computed by hand on constructed signals."""

import numpy as np
import pandas as pd
import pytest

from pclr_jax.data.synthetic.calibration import (
    LEADS,
    N_SAMPLES,
    RATE,
    baseline_wander_level,
    cohort_statistics,
    detect_r_peaks,
    measure_ecg,
    noise_level,
    retrieval_top1,
    to_calibration_grid,
)

T = np.arange(N_SAMPLES) / RATE


def _spike_ecg(frontal_deg: float, amplitude_mv: float, rr_s: float) -> np.ndarray:
    """A ``(1000, 12)`` ECG of narrow Gaussian QRS spikes every ``rr_s`` seconds whose frontal
    dipole (amplitude, angle; 0 = lead I, +90 = feet) is given; V1-V6 carry the amplitude."""
    spikes = np.zeros(N_SAMPLES)
    for peak in np.arange(0.4, 10.0, rr_s):
        spikes += np.exp(-0.5 * ((T - peak) / 0.012) ** 2)
    lead_i = amplitude_mv * np.cos(np.radians(frontal_deg)) * spikes
    lead_avf = amplitude_mv * np.sin(np.radians(frontal_deg)) * spikes
    lead_ii = lead_avf + lead_i / 2
    limb = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2,
                     lead_i - lead_ii / 2, lead_avf], axis=1)  # fmt: skip
    return np.concatenate([limb, np.repeat(amplitude_mv * spikes[:, None], 6, axis=1)], axis=1)


def test_white_noise_level():
    noise = np.random.default_rng(0).normal(0.0, 0.05, (N_SAMPLES, 12))
    assert noise_level(noise) == pytest.approx(0.05, rel=0.06)


def test_baseline_wander_level_of_a_slow_sinusoid():
    wander = 0.3 * np.sin(2 * np.pi * 0.1 * T)[:, None] * np.ones(12)
    assert baseline_wander_level(wander) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    fast = 0.3 * np.sin(2 * np.pi * 8.0 * T)[:, None] * np.ones(12)
    assert baseline_wander_level(fast) < 0.03  # 1e-5 in the middle; the rest is edge transients


@pytest.mark.parametrize("frontal_deg", [-30.0, 20.0, 60.0, 100.0])
def test_rate_axis_and_amplitude_of_spike_trains(frontal_deg):
    ecg = _spike_ecg(frontal_deg, amplitude_mv=1.2, rr_s=0.8)
    assert len(detect_r_peaks(ecg)) == 12  # spikes at 0.4, 1.2, ..., 9.2 s
    m = measure_ecg(ecg)
    assert m.heart_rate_bpm == pytest.approx(75.0, abs=0.1)
    assert m.qrs_axis_deg == pytest.approx(frontal_deg, abs=2.0)
    # Peak-to-peak of a spike is its peak height (the 0.5 Hz high-pass barely touches it).
    heights = np.abs(ecg).max(axis=0)
    assert m.qrs_amplitude_mv == pytest.approx(heights.mean(), rel=0.05)
    assert m.template.shape == (70, 12)
    assert m.noise_mv < 1e-3 and m.baseline_wander_mv < 0.05


def test_resampling_to_the_grid_keeps_rate_and_axis():
    ecg = _spike_ecg(40.0, amplitude_mv=1.0, rr_s=0.75)
    upsampled = np.stack([np.interp(np.arange(4096) / 409.6, T, lead) for lead in ecg.T], axis=1)
    assert to_calibration_grid(upsampled).shape == (N_SAMPLES, 12)
    m = measure_ecg(upsampled)
    assert m.heart_rate_bpm == pytest.approx(80.0, abs=0.5)
    assert m.qrs_axis_deg == pytest.approx(40.0, abs=2.0)
    assert LEADS[5] == "aVF"


def test_retrieval_top1_by_hand():
    # Pairs (rows 2i, 2i+1): patient 0 close together, patient 1 split apart so that its second
    # ECG is nearest to patient 0's.
    points = np.array([[0.0], [0.1], [10.0], [0.3]])
    # Row 0 -> 1 (right), row 1 -> 0 (right), row 2 -> 3 (right, the only one near), row 3 -> 1.
    assert retrieval_top1(points) == pytest.approx(0.75)
    assert retrieval_top1(np.array([[0.0], [0.0], [5.0], [5.0]])) == 1.0


def test_cohort_statistics_by_hand():
    # 4 patients x 2 ECGs: heart rates differ by exactly 2 bpm within a patient, by >= 20 between.
    rows = []
    for patient in range(4):
        for visit in range(2):
            rows.append(
                {
                    "patient_id": patient,
                    "heart_rate_bpm": 60.0 + 20 * patient + 2 * visit,
                    "qrs_axis_deg": 170.0 if visit == 0 else -170.0,  # 20 deg apart
                    "log_qrs_amplitude": 0.1 * visit,
                    "qrs_amplitude_mv": 1.0,
                    "t_amplitude_mv": 0.2,
                    "noise_mv": 0.01,
                    "baseline_wander_mv": 0.05,
                }
            )
    table = pd.DataFrame(rows)
    representations = np.repeat(np.arange(4.0) * 10, 2)[:, None]
    stats = cohort_statistics(table, representations, gallery_patients=4, draws=3)
    assert stats["patients"] == 4 and stats["retrieval_top1"] == 1.0
    assert stats["same_patient_auc"] == 1.0
    assert stats["heart_rate_bpm_within"] == pytest.approx(2.0)
    assert stats["heart_rate_bpm_between"] >= 18.0
    assert stats["qrs_axis_deg_within"] == pytest.approx(20.0)  # the short way round
    assert stats["log_qrs_amplitude_within"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="fewer than the gallery"):
        cohort_statistics(table, representations, gallery_patients=5)
