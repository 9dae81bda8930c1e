"""A study's statistics against known answers: intervals over seeds and test set on simulated
studies with a known difference, the multiplicity corrections by hand and on the published
studies, power against G*Power's tables and a simulation, the config check, the plain words."""

import math
import pathlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pclr_jax.study import multiplicity, power, two_source
from pclr_jax.study.budget import config_differences
from pclr_jax.study.items import RETRIEVAL, MetricItems
from pclr_jax.study.plan import format_plan, plan_study
from pclr_jax.study.report import summarize
from pclr_jax.study.summary_text import plain_words

STUDIES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "studies"


# ----------------------------------------------------------------------------- two sources


def _deviations(arm: np.ndarray, reference: np.ndarray, kind, y, n_bootstrap, seed):
    """Per-seed deviations of arm - reference through the report's own machinery: each cell's
    items, one common patient resample for every seed and both arms."""
    seeds = len(arm)
    rows = np.arange(arm.shape[1])
    cells = {}
    for name, values in (("arm", arm), ("ref", reference)):
        for s in range(seeds):
            items = (
                MetricItems(rows, RETRIEVAL, values[s])
                if kind == RETRIEVAL
                else MetricItems(rows, kind, values[s][None], y)
            )
            cells[(name, s)] = items
    found = two_source.metric_deviations(cells, rows, n_bootstrap, seed, "metric")
    return np.stack([found[("arm", s)] - found[("ref", s)] for s in range(seeds)], axis=1)


def test_interval_over_seeds_and_test_set_covers_a_known_difference():
    """400 simulated studies of 5 seeds x 200 test patients whose per-patient differences share
    a test-set part: the true difference 0.02 is covered about 95% of the time by the interval
    over both sources, far less by the seed-only t interval, which cannot see the test set."""
    rng = np.random.default_rng(0)
    studies, seeds, patients, delta = 400, 5, 200, 0.02
    covered = {"both": 0, "seeds": 0}
    for study in range(studies):
        patient = rng.normal(0, 0.3, patients)  # each patient's own effect, shared by the seeds
        seed_effect = rng.normal(0, 0.01, (seeds, 1))
        noise = rng.normal(0, 0.2, (seeds, patients))  # seed x patient interaction
        reference = rng.normal(0.5, 0.1, patients) + np.zeros((seeds, 1))
        arm = reference + delta + patient + seed_effect + noise
        differences = arm.mean(axis=1) - reference.mean(axis=1)
        deviations = _deviations(arm, reference, RETRIEVAL, None, 200, study)
        both = two_source.two_source_interval(differences, deviations)
        seed_only = stats.ttest_1samp(differences, 0).confidence_interval()
        covered["both"] += both.low <= delta <= both.high
        covered["seeds"] += seed_only.low <= delta <= seed_only.high
    assert 0.92 <= covered["both"] / studies <= 0.98
    assert covered["seeds"] / studies < 0.75


def test_interval_over_seeds_and_test_set_covers_a_known_auroc_difference():
    """A nonlinear metric through the stratified patient resampling: binormal scores whose
    separation is 1.0 for the arm and 0.8 for the reference (sd 0.03 between seeds), population
    AUROC Phi(d / sqrt(2 + 0.03^2)). Each arm's scores carry a per-patient part of their own,
    the same at every seed: the test set's noise, which the seed-only interval misses."""
    rng = np.random.default_rng(1)
    studies, seeds, patients, spread = 150, 3, 200, 0.03
    truth = stats.norm.cdf(1.0 / np.sqrt(2 + spread**2)) - stats.norm.cdf(
        0.8 / np.sqrt(2 + spread**2)
    )
    covered = {"both": 0, "seeds": 0}
    for study in range(studies):
        y = np.zeros(patients, int)
        y[: patients // 3] = 1
        shared = rng.normal(size=patients)
        scores = {}
        for name, separation in (("arm", 1.0), ("ref", 0.8)):
            d = rng.normal(separation, spread, (seeds, 1))
            own_patient = rng.normal(size=patients)
            own_seed = rng.normal(size=(seeds, patients))
            # unit variance given y: 0.6^2 + 0.7^2 + 0.15
            scores[name] = d * y + 0.6 * shared + 0.7 * own_patient + np.sqrt(0.15) * own_seed
        differences = [
            roc_auc_score(y, a) - roc_auc_score(y, r)
            for a, r in zip(scores["arm"], scores["ref"], strict=True)
        ]
        deviations = _deviations(scores["arm"], scores["ref"], "binary", y, 150, study)
        both = two_source.two_source_interval(differences, deviations)
        seed_only = stats.ttest_1samp(differences, 0).confidence_interval()
        covered["both"] += both.low <= truth <= both.high
        covered["seeds"] += seed_only.low <= truth <= seed_only.high
    assert 0.92 <= covered["both"] / studies <= 0.99
    assert covered["seeds"] / studies < 0.85


def test_interval_limits_are_the_t_and_the_normal_interval():
    differences = np.array([0.01, 0.03, 0.02])
    # No test-set noise: exactly the paired t interval and its p-value.
    alone = two_source.two_source_interval(differences, np.zeros((100, 3)))
    t = stats.ttest_1samp(differences, 0.0)
    assert (alone.low, alone.high) == pytest.approx(tuple(t.confidence_interval()), abs=1e-9)
    assert alone.p_value == pytest.approx(t.pvalue, rel=1e-6)
    # Seeds agree exactly: the normal interval of the shared test-set noise, whose standard
    # deviation is the common part of the per-seed deviations (here 0.01 by construction).
    rng = np.random.default_rng(2)
    shared = rng.normal(0, 0.01, (20000, 1))
    deviations = shared + rng.normal(0, 0.02, (20000, 3))
    agree = two_source.two_source_interval(np.full(3, 0.02), deviations)
    assert agree.test_sd == pytest.approx(0.01, rel=0.05)
    assert agree.high - agree.mean == pytest.approx(1.959964 * agree.test_sd, rel=1e-6)
    assert agree.p_value == pytest.approx(2 * stats.norm.sf(0.02 / agree.test_sd), rel=1e-6)
    assert not agree.constant and agree.resolved


# ----------------------------------------------------------------------------- multiplicity


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # Holm, m = 5 (NaN counts as 1): sorted 0.005, 0.01, 0.03, 0.04, 1 times 5, 4, 3, 2, 1 ->
    # 0.025, 0.04, 0.09, 0.08, 1 -> running maximum 0.025, 0.04, 0.09, 0.09, 1.
    assert multiplicity.adjust(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.025, 1.0])
    # BH: p * 5 / rank: 0.025, 0.025, 0.05, 0.05, 1 -> running minimum from the top.
    assert multiplicity.adjust(p, "bh") == pytest.approx([0.025, 0.05, 0.05, 0.025, 1.0])
    assert multiplicity.adjust(p, "none") == pytest.approx([0.01, 0.04, 0.03, 0.005, 1.0])
    with pytest.raises(ValueError, match="unknown correction"):
        multiplicity.adjust(p, "bonferonni")


def test_published_studies_under_holm_match_an_independent_recomputation():
    """Issue 21's recomputation (own code): 42 real comparisons in the synthetic study
    (patient_supcon's 14 identically zero), 51 in the PTB-XL one; none survives Holm or BH; the
    smallest Holm-adjusted p is 0.075 (VICReg, LVH at 1,000 labels)."""
    for folder, counted, smallest in (
        ("loss_variants_synthetic", 42, None),
        ("loss_variants_ptbxl_reduced", 51, 0.0755),
    ):
        frame = pd.read_csv(STUDIES / folder / "results.csv")
        arms = list(dict.fromkeys(frame["arm"]))
        for correction in ("holm", "bh"):
            summary = summarize(frame, arms, "ntxent", correction=correction)
            differences = summary[summary["kind"] == "difference"]
            family = differences[differences["excluded"] == ""]
            assert len(family) == counted
            assert not family["survives"].any()
        excluded = set(differences.loc[differences["excluded"] != "", "arm"])
        assert excluded == ({"patient_supcon"} if counted == 42 else set())
        holm = summarize(frame, arms, "ntxent")
        if smallest is not None:
            best = holm.loc[holm["p_adjusted"].idxmin()]
            assert best["p_adjusted"] == pytest.approx(smallest, abs=5e-4)
            assert (best["arm"], best["metric"]) == ("vicreg", "lvh_auroc@1000")


# ----------------------------------------------------------------------------- power


def test_seeds_needed_match_gpower():
    """G*Power 3.1, t test of one mean (matched pairs), two-sided alpha 0.05, power 0.8: effect
    size 0.5 needs 34 pairs (actual power 0.808), 0.8 needs 15 (0.821), 0.2 needs 199 (0.802)."""
    for effect, pairs, actual in ((0.5, 34, 0.808), (0.8, 15, 0.821), (0.2, 199, 0.802)):
        assert power.seeds_needed(effect, 1.0, 0.05) == pairs
        assert power.power(effect, 1.0, pairs, 0.05) == pytest.approx(actual, abs=5e-4)
        assert power.power(effect, 1.0, pairs - 1, 0.05) < 0.8


def test_minimal_detectable_difference_has_the_power_it_claims():
    """Simulated paired t tests at the minimal detectable difference for 5 seeds with sd 0.02
    and alpha 0.05 / 42 reject in 80% of 20,000 studies."""
    alpha = 0.05 / 42
    delta = power.minimal_detectable(0.02, 5, alpha)
    rng = np.random.default_rng(3)
    differences = rng.normal(delta, 0.02, (20000, 5))
    t = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / np.sqrt(5))
    rejected = 2 * stats.t.sf(np.abs(t), 4) < alpha
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    # The test set's noise does not shrink with seeds: the floor is (z(1 - a/2) + z(0.8)) sd.
    floor = (stats.norm.ppf(1 - 0.05 / 2) + stats.norm.ppf(0.8)) * 0.01
    assert power.minimal_detectable(0.02, 100000, 0.05, test_sd=0.01) == pytest.approx(
        floor, rel=1e-3
    )
    assert power.seeds_needed(0.9 * floor, 0.02, 0.05, test_sd=0.01) is None
    # sd's 80% upper bound from 6 df: sd sqrt(6 / chi2.ppf(0.2, 6)), chi2.ppf(0.2, 6) = 3.070.
    assert power.sd_upper(1.0, 6) == pytest.approx(math.sqrt(6 / 3.070088), rel=1e-5)


def test_plan_pools_the_arms_spread(tmp_path):
    summary = pd.DataFrame(
        dict(
            kind="difference",
            arm=["a", "b", "c"],
            metric="retrieval_top1",
            n=[3, 3, 3],
            sd=[0.01, 0.02, 0.0],
            test_sd=[np.nan] * 3,
            excluded=["", "", "identical"],
            correction="holm",
        )
    )
    plans, alpha, m = plan_study(summary, 0.03)
    assert m == 2 and alpha == pytest.approx(0.025)
    # Pooled over a and b (2 df each): sqrt((2 * 0.01^2 + 2 * 0.02^2) / 4).
    assert plans[0].sd == pytest.approx(math.sqrt(0.00025)) and plans[0].df == 4
    assert plans[0].needed == power.seeds_needed(0.03, math.sqrt(0.00025), 0.025)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    text = format_plan(tmp_path, 0.03)
    assert "alpha 0.025 (0.05 / 2 comparisons, Holm's family-wise correction)" in text
    assert f"| retrieval_top1 | 0.0158 (4) | - | {plans[0].detectable:.4f} |" in text
    assert "optimistic" in text  # no test-set noise known


# ----------------------------------------------------------------------------- config, words


def test_config_differences_ignore_overrides_and_seed():
    reference = {"seed": 0, "loss": {"name": "ntxent", "hparams": {"t": 0.1}}, "lr": 1e-3}
    other = {"seed": 1, "loss": {"name": "siglip", "hparams": {"b": 2}}, "lr": 2e-3, "x": 1}
    assert config_differences(reference, other, ["loss.name", "loss.hparams"]) == [
        "lr (0.001 -> 0.002)",
        "x ((absent) -> 1)",
    ]
    assert config_differences(reference, reference) == []


def test_plain_words_say_what_survives():
    rows = [
        dict(arm="vicreg", metric="retrieval_top1", mean=-0.1, low=-0.15, high=-0.05, p=0.001),
        dict(arm="vicreg", metric="sex_auroc@100", mean=0.03, low=0.001, high=0.06, p=0.04),
        dict(arm="cmsc", metric="retrieval_top1", mean=0.01, low=-0.02, high=0.04, p=0.4),
        dict(arm="cmsc", metric="sex_auroc@100", mean=0.0, low=-0.01, high=0.01, p=0.9),
    ]
    summary = pd.DataFrame(
        [
            dict(
                kind="difference",
                reference="ntxent",
                n=5,
                sd=0.01,
                interval="seeds and test set",
                p_value=r.pop("p"),
                resolved=r["low"] > 0 or r["high"] < 0,
                constant=False,
                excluded="",
                correction="holm",
                **r,
            )
            for r in rows
        ]
    )
    summary["p_adjusted"] = multiplicity.adjust(summary["p_value"], "holm")
    summary["survives"] = summary["p_adjusted"] < 0.05
    text = plain_words(summary)
    assert "4 comparisons (2 arms x 2 metrics) under Holm's family-wise correction at 5%." in text
    assert (
        "- **vicreg**: survives the correction: lower retrieval_top1 (-0.100 [-0.150, -0.050], "
        "adjusted p 0.004). Its interval excludes 0 but the difference does not survive the "
        "correction: sex_auroc@100 +0.030 [+0.001, +0.060] (p 0.04, adjusted 0.12). Within "
        "noise on 0 of 2 metrics." in text
    )
    assert "- **cmsc**: no difference survives the correction. Within noise on 2 of 2" in text
    assert text.endswith("1 of 4 differences survive the correction.")
    assert "cover the seeds and the test set" in text
