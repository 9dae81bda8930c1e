"""The synthetic generator: lead physics, rhythm, patient identity, learnable traits, determinism.

Every check measures the generated signals with independent tools (scipy's filters and peak
finder, a median-beat template, scikit-learn models) rather than reading the generator's internals.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import signal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pclr_jax.data.synthetic.config import SyntheticConfig
from pclr_jax.data.synthetic.generator import (
    ECG_COLUMNS,
    generate,
    iter_synthetic_chunks,
    sample_patients,
)

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 409.6


def _lead(ecgs, name):
    return ecgs[..., LEADS.index(name)]


def _bandpass(ecgs, low_hz, high_hz):
    sos = signal.butter(2, (low_hz, high_hz), btype="bandpass", fs=FS, output="sos")
    return signal.sosfiltfilt(sos, ecgs, axis=-2)


def _r_peaks(ecg):
    """R peaks of one ``(S, 12)`` ECG: peaks of the 5-30 Hz energy summed over all leads."""
    energy = np.sum(_bandpass(ecg, 5.0, 30.0) ** 2, axis=-1)
    peaks, _ = signal.find_peaks(energy, distance=int(0.25 * FS), height=0.2 * energy.max())
    return peaks


def _median_beat(ecg, peaks, before_s=0.25, after_s=0.45, step=8):
    """``(samples, 12)`` median beat of a 0.5-40 Hz filtered ECG, decimated by ``step``."""
    filtered = _bandpass(ecg, 0.5, 40.0)
    lo, hi = int(before_s * FS), int(after_s * FS)
    peaks = peaks[(peaks >= lo) & (peaks + hi <= len(ecg))]
    beats = np.stack([filtered[p - lo : p + hi] for p in peaks])
    return np.median(beats, axis=0)[::step]


def _features(ecgs):
    """Hand features: the median beat and the RR mean and coefficient of variation."""
    rows = []
    for ecg in ecgs:
        peaks = _r_peaks(ecg)
        rr = np.diff(peaks) / FS
        rows.append(
            np.concatenate([_median_beat(ecg, peaks).ravel(), [rr.mean(), rr.std() / rr.mean()]])
        )
    return np.array(rows)


@pytest.fixture(scope="module")
def cohort():
    """80 patients with 2-3 ECGs each; AF and LVH frequent enough to compare groups."""
    config = SyntheticConfig(
        n_patients=80, ecgs_per_patient=(2, 3), seed=11, af_prevalence=0.25, lvh_prevalence=0.25
    )
    ecgs, meta = generate(config, chunk_patients=32)
    return config, ecgs, meta


def test_shapes_columns_and_plausible_values(cohort):
    config, ecgs, meta = cohort
    assert ecgs.dtype == np.float32 and ecgs.shape == (len(meta), 4096, 12)
    assert tuple(meta.columns) == ECG_COLUMNS
    assert meta["record_id"].is_unique
    assert np.isfinite(ecgs).all()
    counts = meta.groupby("patient_id").size()
    assert counts.between(2, 3).all() and set(counts) == {2, 3}
    assert sorted(counts.index) == list(range(config.n_patients))
    # The tallest QRS deflection (largest peak-to-peak of the filtered signal over the leads);
    # severe LVH reaches 5-8 mV in V1-V2.
    span = np.ptp(_bandpass(ecgs, 0.5, 40.0), axis=1).max(axis=1)
    assert np.all(span > 0.5) and np.all(span < 9.0)
    assert 0.8 < np.median(span) < 4.0
    # R-peak amplitude in lead II for sinus patients with a normal axis is around 0.5-3 mV.
    assert 0.3 < np.median(np.max(_bandpass(_lead(ecgs, "II"), 0.5, 40.0), axis=1)) < 3.0


def test_lead_identities(cohort):
    _, ecgs, _ = cohort
    lead = {name: _lead(ecgs, name).astype(np.float64) for name in LEADS}
    assert np.abs(lead["I"] + lead["III"] - lead["II"]).max() < 1e-5
    assert np.abs(lead["aVR"] + lead["aVL"] + lead["aVF"]).max() < 1e-5
    np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=1e-5)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=1e-5)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-5)
    assert np.abs(lead["III"]).max() > 0.1 and np.abs(lead["aVL"]).max() > 0.1


def test_detected_heart_rate_matches_generator(cohort):
    _, ecgs, meta = cohort
    sinus = np.flatnonzero(meta["af"].to_numpy() == 0)
    detected = np.array([60.0 / np.mean(np.diff(_r_peaks(ecgs[i])) / FS) for i in sinus])
    expected = meta["heart_rate_bpm"].to_numpy()[sinus]
    assert np.abs(detected - expected).max() < 3.0, np.abs(detected - expected).max()
    assert 40 <= expected.min() and expected.max() <= 150 and expected.std() > 5


def test_af_rhythm_is_irregular(cohort):
    _, ecgs, meta = cohort
    af = meta["af"].to_numpy()
    assert 0 < af.sum() < len(af)
    cv = np.array([np.std(np.diff(p)) / np.mean(np.diff(p)) for p in map(_r_peaks, ecgs)])
    assert np.median(cv[af == 1]) > 3 * np.median(cv[af == 0])
    assert roc_auc_score(af, cv) > 0.95


def test_lvh_raises_sokolow_lyon_voltage(cohort):
    _, ecgs, meta = cohort
    filtered = _bandpass(ecgs, 0.5, 40.0)
    sokolow = -_lead(filtered, "V1").min(axis=1) + np.maximum(
        _lead(filtered, "V5").max(axis=1), _lead(filtered, "V6").max(axis=1)
    )
    lvh = meta["lvh"].to_numpy()
    assert sokolow[lvh == 1].mean() > sokolow[lvh == 0].mean() + 1.0
    assert roc_auc_score(lvh, sokolow) > 0.8


def test_same_patient_ecgs_are_alike_but_not_equal(cohort):
    _, ecgs, meta = cohort
    templates = np.stack([_median_beat(e, _r_peaks(e), step=2).ravel() for e in ecgs])
    corr = np.corrcoef(templates)
    patient = meta["patient_id"].to_numpy()
    same = patient[:, None] == patient[None, :]
    off_diagonal = ~np.eye(len(patient), dtype=bool)
    assert corr[same & off_diagonal].mean() > corr[~same].mean() + 0.2
    np.fill_diagonal(corr, -np.inf)
    top1 = np.mean(patient[np.argmax(corr, axis=1)] == patient)
    assert top1 > 0.8, top1  # chance is about 1 / 80
    first, second = np.flatnonzero(patient == patient[0])[:2]
    assert np.abs(ecgs[first] - ecgs[second]).max() > 0.05


def test_age_sex_af_lvh_are_learnable():
    config = SyntheticConfig(
        n_patients=400, ecgs_per_patient=1, seed=5, af_prevalence=0.2, lvh_prevalence=0.2
    )
    ecgs, meta = generate(config)
    features = _features(ecgs)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    targets = {
        "sex": meta["sex"],
        "age_over_60": (meta["age"] > 60).astype(int),
        "af": meta["af"],
        "lvh": meta["lvh"],
    }
    auroc = {}
    for name, y in targets.items():
        scores = cross_val_predict(model, features, y, cv=4, method="predict_proba")[:, 1]
        auroc[name] = roc_auc_score(y, scores)
    assert min(auroc.values()) > 0.7, auroc


def test_deterministic_and_chunking_invariant():
    config = SyntheticConfig(n_patients=9, ecgs_per_patient=(1, 3), n_samples=512, seed=3)
    ecgs, meta = generate(config, chunk_patients=9)
    for chunk in (1, 4):
        other, other_meta = generate(config, chunk_patients=chunk)
        np.testing.assert_array_equal(other, ecgs)
        pd.testing.assert_frame_equal(other_meta, meta)
    # A larger data set starts with the same patients; another seed gives other data.
    bigger, bigger_meta = generate(dataclasses.replace(config, n_patients=12))
    np.testing.assert_array_equal(bigger[: len(ecgs)], ecgs)
    other_seed, _ = generate(dataclasses.replace(config, seed=4))
    assert other_seed.shape != ecgs.shape or not np.allclose(other_seed, ecgs)
    chunks = list(iter_synthetic_chunks(config, chunk_patients=4))
    assert [len(m["patient_id"].unique()) for _, m in chunks] == [4, 4, 1]


def test_sample_patients_matches_ecg_metadata_and_prevalence():
    config = SyntheticConfig(n_patients=4000, ecgs_per_patient=1, af_prevalence=0.1)
    patients = sample_patients(config)
    assert list(patients["patient_id"]) == list(range(4000))
    assert abs(patients["af"].mean() - 0.1) < 0.02
    assert abs(patients["lvh"].mean() - config.lvh_prevalence) < 0.02
    assert patients["age"].between(*config.age_range).all()
    # Risk rises with age; LVH is more common in men; women have longer QTc and lower voltage.
    assert patients.loc[patients["af"] == 1, "age"].mean() > patients["age"].mean() + 5
    by_sex = patients.groupby("sex")
    assert by_sex["lvh"].mean()[0] > by_sex["lvh"].mean()[1]
    assert by_sex["qtc_ms"].mean()[1] > by_sex["qtc_ms"].mean()[0] + 10
    assert by_sex["qrs_voltage"].mean()[1] < by_sex["qrs_voltage"].mean()[0]
    assert patients.loc[patients["af"] == 1, "pr_ms"].isna().all()

    small = dataclasses.replace(config, n_patients=30)
    _, meta = generate(small)
    merged = meta.merge(sample_patients(small), on="patient_id", suffixes=("", "_patient"))
    for column in ("age", "sex", "af", "lvh", "bbb"):
        np.testing.assert_array_equal(merged[column], merged[f"{column}_patient"])


@pytest.mark.parametrize(
    "changes",
    [
        {"ecgs_per_patient": 0},
        {"ecgs_per_patient": (3, 2)},
        {"af_prevalence": 1.5},
        {"noise_mv": (0.0, 0.1)},
        {"n_patients": -1},
        {"duration_s": 1.0},
    ],
)
def test_config_validation(changes):
    with pytest.raises(ValueError):
        SyntheticConfig(**{"n_patients": 2, "ecgs_per_patient": 1, **changes})
