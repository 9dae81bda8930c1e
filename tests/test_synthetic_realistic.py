"""The realistic generator features (visits years apart, conditions per ECG, look-alike families,
lead faults) measured in generated traits and signals, and the original configs unchanged."""

import dataclasses
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from pclr_jax.data.builders.pclr_synthetic import REALISTIC, PclrSynthetic, SyntheticBuilderConfig
from pclr_jax.data.prepared import load_prepared
from pclr_jax.data.synthetic.calibration import measure_ecg
from pclr_jax.data.synthetic.config import SyntheticConfig
from pclr_jax.data.synthetic.generator import generate, sample_recordings
from pclr_jax.data.synthetic.traits import family_of, sample_patient_model
from pclr_jax.data.synthetic.visits import visit_models

ORIGINAL = pathlib.Path(__file__).parent / "data" / "synthetic" / "original_configs.json"
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _builder_config(name):
    return next(c for c in PclrSynthetic.BUILDER_CONFIGS if c.name == name)


@pytest.mark.parametrize("name", ["tiny", "cpu_default", "default"])
def test_original_configs_are_unchanged(name):
    """The first patients' ECGs equal those recorded before the realistic features existed."""
    reference = json.loads(ORIGINAL.read_text())[name]
    builder_config = _builder_config(name)
    config = builder_config.synthetic_config()
    assert [config.n_patients, list(config.ecgs_range), config.n_samples] == [
        reference["n_patients"],
        reference["ecgs_per_patient"],
        reference["n_samples"],
    ]
    patients = len({r.rsplit("_", 1)[0] for r in reference["record_id"]})
    ecgs, meta = generate(dataclasses.replace(config, n_patients=patients))
    assert meta["record_id"].tolist() == reference["record_id"]
    np.testing.assert_array_equal(
        meta[["age", "sex", "af", "lvh", "bbb"]].to_numpy(), reference["labels"]
    )
    np.testing.assert_allclose(meta["heart_rate_bpm"], reference["heart_rate_bpm"], atol=1e-5)
    index = reference["sample_index"]
    np.testing.assert_allclose(ecgs[:, index], reference["samples"], atol=2e-5)
    np.testing.assert_allclose(ecgs.mean(axis=1), reference["mean"], atol=2e-6)
    np.testing.assert_allclose(ecgs.std(axis=1), reference["std"], atol=2e-6)


def _visits_config(**changes):
    return SyntheticConfig(
        n_patients=400, ecgs_per_patient=(2, 4), n_samples=256, seed=7, **{**REALISTIC, **changes}
    )


def test_visits_age_drift_and_conditions_change_per_ecg():
    config = _visits_config(condition_drift_per_year=0.8, lvh_prevalence=0.3)
    model = sample_patient_model(config, np.arange(config.n_patients))
    _, meta = sample_recordings(config, model)
    by_patient = meta.groupby("patient_id")
    first = meta["ecg_index"] == 0
    assert (meta.loc[first, "years_since_first"] == 0).all()
    assert (by_patient["years_since_first"].diff().dropna() >= 0).all()
    # Exponential gaps of mean 1.5 years.
    gaps = by_patient["years_since_first"].diff().dropna()
    assert gaps.mean() == pytest.approx(1.5, rel=0.15)
    # Age grows with the years since the first ECG (rounded to 0.1 year).
    grown = meta["age"] - meta["patient_id"].map(meta[first].set_index("patient_id")["age"])
    np.testing.assert_allclose(grown, meta["years_since_first"], atol=0.051)
    # Conditions appear and resolve between a patient's ECGs: labels belong to the ECG.
    for condition in ("af", "lvh", "bbb"):
        changed = by_patient[condition].nunique() > 1
        assert 0.02 < changed.mean() < 0.5, (condition, changed.mean())
    # Without visits the labels are the patient's.
    plain = SyntheticConfig(n_patients=100, ecgs_per_patient=(2, 4), n_samples=256, seed=7)
    _, plain_meta = sample_recordings(plain, sample_patient_model(plain, np.arange(100)))
    assert (plain_meta.groupby("patient_id")[["af", "lvh", "bbb"]].nunique() == 1).all().all()


def test_trait_drift_grows_with_years():
    config = _visits_config(trait_drift_per_year=0.3, visit_jitter=0.0, visit_interval_years=4.0)
    model = sample_patient_model(config, np.arange(config.n_patients))
    owner = np.repeat(np.arange(config.n_patients), 2)
    index = np.tile([0, 1], config.n_patients)
    ecg_model, visits = visit_models(config, model, owner, index)
    axis = ecg_model.traits["qrs_axis_deg"].to_numpy().reshape(-1, 2)
    years = visits.years_since_first.reshape(-1, 2)[:, 1]
    change = np.abs(axis[:, 1] - axis[:, 0])
    # Random walk: the axis change grows like sqrt(years); age lowers the axis 6 deg a decade.
    assert change[years > 6].mean() > 1.5 * change[years < 1.5].mean()
    assert np.mean(axis[:, 1] - axis[:, 0]) < 0


def test_families_make_patients_alike():
    config = _visits_config(morphology_families=5, family_weight=0.9)
    model = sample_patient_model(config, np.arange(200))
    family = family_of(config, np.arange(200))
    assert set(family) == set(range(5))
    # The ventricular rotation is 12 z degrees: no age, sex or condition effect.
    rotation = model.traits["rotation_deg"].to_numpy()
    within = np.mean([rotation[family == f].std() for f in range(5)])
    assert within < 0.5 * rotation.std()  # sqrt(1 - 0.9) = 0.32 expected
    # Without families the same patients are not grouped.
    alone = sample_patient_model(dataclasses.replace(config, morphology_families=0), np.arange(200))
    loose = alone.traits["rotation_deg"].to_numpy()
    assert np.mean([loose[family == f].std() for f in range(5)]) > 0.8 * loose.std()


def _quiet(**changes):
    quiet = {
        "noise_mv": (1e-6, 1e-6),
        "baseline_wander_mv": (1e-6, 1e-6),
        "powerline_probability": 0.0,
        "visit_interval_years": 1.0,
    }
    return SyntheticConfig(
        n_patients=6, ecgs_per_patient=2, n_samples=1024, seed=3, **quiet, **changes
    )


def _least_squares(target, *columns):
    """Coefficients and the relative residual of ``target`` fitted by ``columns``."""
    design = np.stack(columns, axis=1).astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = np.linalg.norm(design @ coefficients - target) / np.linalg.norm(target)
    return coefficients, residual


def test_limb_reversal_is_detectable():
    normal, _ = generate(_quiet())
    reversed_, meta = generate(_quiet(limb_reversal_rate=1.0))
    assert (meta["limb_reversal"] == 1).all()
    lead = {name: i for i, name in enumerate(LEADS)}
    # Arm electrodes swapped: I inverted, the II channel records III. Each channel keeps its own
    # amplifier gain (exp(0.03 z)), so II' = II - (g_II / g_I) I.
    np.testing.assert_allclose(reversed_[..., lead["I"]], -normal[..., lead["I"]], atol=1e-4)
    for a, b in zip(normal, reversed_, strict=True):
        (on_ii, on_i), residual = _least_squares(
            b[:, lead["II"]], a[:, lead["II"]], a[:, lead["I"]]
        )
        assert on_ii == pytest.approx(1.0, abs=1e-3) and -1.25 < on_i < -0.8
        assert residual < 1e-3
    # The measured frontal QRS axis mirrors: theta -> 180 - theta (up to the channel gains).
    for a, b in zip(normal, reversed_, strict=True):
        mirrored = (180.0 - measure_ecg(a, 10.0).qrs_axis_deg + 180.0) % 360.0 - 180.0
        assert measure_ecg(b, 10.0).qrs_axis_deg == pytest.approx(mirrored, abs=6.0)  # gains


def test_precordial_swap_exchanges_neighbouring_chest_leads():
    normal, _ = generate(_quiet())
    swapped, meta = generate(_quiet(precordial_swap_rate=1.0))
    assert meta["precordial_swap"].between(0, 4).all()
    for ecg, plain, k in zip(swapped, normal, meta["precordial_swap"], strict=True):
        left, right = LEADS.index(f"V{k + 1}"), LEADS.index(f"V{k + 2}")
        # The electrodes swap; each channel keeps its gain: proportional, not equal.
        for a, b in ((left, right), (right, left)):
            (scale,), residual = _least_squares(ecg[:, a], plain[:, b])
            assert 0.8 < scale < 1.25 and residual < 1e-3
        np.testing.assert_allclose(ecg[:, :6], plain[:, :6], atol=1e-4)


def test_realistic_configs_prepare_like_the_others():
    realistic, cpu = _builder_config("realistic"), _builder_config("cpu_realistic")
    assert realistic.synthetic_config().n_samples == 4096
    assert cpu.synthetic_config().n_samples == 1024
    assert cpu.synthetic_config().morphology_families == REALISTIC["morphology_families"]
    with pytest.raises(ValueError, match="family_weight"):
        _visits_config(family_weight=1.5)
    with pytest.raises(ValueError, match="visit_jitter"):
        _visits_config(visit_jitter=-0.1)


def test_prepared_realistic_set_keeps_per_ecg_labels(tmp_path):
    realism = {**REALISTIC, "condition_drift_per_year": 1.0, "lvh_prevalence": 0.4}
    config = SyntheticBuilderConfig(
        name="tiny_realistic", n_patients=40, ecgs_per_patient=(2, 3), n_samples=256,
        realism=realism,
    )  # fmt: skip
    PclrSynthetic(config=config, data_dir=str(tmp_path), workers=0).download_and_prepare()
    ecgs, metadata = generate(config.synthetic_config())
    metadata = metadata.set_index("record_id")
    rows = []
    for split in ("train", "validation", "test"):
        prepared = load_prepared("pclr_synthetic", split, tmp_path, config="tiny_realistic")
        for i in range(len(prepared.source)):
            item = prepared.source[i]
            expected = metadata.loc[item["record_id"].decode()]
            np.testing.assert_array_equal(
                item["ecg"],
                ecgs[metadata.index.get_loc(item["record_id"].decode())].astype(np.float16),
            )
            assert (item["af"], item["lvh"]) == (expected["af"], expected["lvh"])
            assert np.float32(item["age"]) == np.float32(expected["age"])
        rows.append(prepared.index)
    index = pd.concat(rows)
    assert len(index) == len(metadata)
    changed = index.groupby("patient_id")[["lvh", "age"]].nunique()
    assert (changed["lvh"] > 1).any() and (changed["age"] > 1).any()  # labels of the ECG


def _knobs(name):
    return dataclasses.asdict(_builder_config(name).synthetic_config())


def _changed(name, base):
    """The SyntheticConfig fields in which config ``name`` differs from config ``base``."""
    a, b = _knobs(name), _knobs(base)
    return {k: a[k] for k in a if a[k] != b[k]}


def test_transfer_candidates_change_exactly_the_knobs_they_name():
    """The calibration's candidates (docs/data.md, second to fourth rounds): each varies one
    thing of the config it is compared with, in both sizes."""
    weak_lvh = {"lvh_voltage_gain": (1.1, 1.45), "lvh_strain_fraction": 0.3}
    assert _changed("cpu_default_weak_lvh", "cpu_default") == weak_lvh
    assert _changed("default_weak_lvh", "default") == weak_lvh
    noisy = {"noise_mv": (0.005, 0.04), "baseline_wander_mv": (0.02, 0.25)}
    assert _changed("cpu_calibrated_noisy", "cpu_calibrated") == noisy
    assert _changed("calibrated_noisy", "calibrated") == noisy
    assert _changed("cpu_realistic_weak_lvh", "cpu_realistic") == weak_lvh
    assert _changed("realistic_weak_lvh", "realistic") == weak_lvh
    stable = {
        "condition_drift_per_year": 0.0,
        "condition_jitter": 0.0,
        "lvh_progression_per_year": 0.0,
    }
    assert _changed("cpu_realistic_stable_conditions", "cpu_realistic_weak_lvh") == stable
    assert _changed("realistic_stable_conditions", "realistic_weak_lvh") == stable
    no_families = {"morphology_families": 0, "family_weight": 0.0}
    assert _changed("cpu_realistic_no_families", "cpu_realistic_weak_lvh") == no_families
    assert _changed("realistic_no_families", "realistic_weak_lvh") == no_families
    for name in (
        "default_weak_lvh",
        "calibrated_noisy",
        "realistic_weak_lvh",
        "realistic_stable_conditions",
        "realistic_no_families",
    ):
        assert _changed(f"cpu_{name}", name) == {"n_patients": 1500, "n_samples": 1024}
