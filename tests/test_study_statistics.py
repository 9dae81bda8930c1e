"""A study's statistics against known answers: intervals over seeds and test set on simulated
studies with a known difference, the multiplicity corrections by hand and on the published
studies, power against G*Power's tables and a simulation, the config check, the plain words."""

import io
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
from pclr_jax.study.summary_text import plain_words, summary_markdown

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


def test_holm_within_a_primary_family_of_3_and_a_family_of_42():
    """A p of 0.012 survives Holm in a pre-registered family of 3 (0.012 x 3 = 0.036) and not in
    one family of 42 comparisons (0.012 x 42 = 0.504); the secondary family is adjusted on its
    own, as if the primary did not exist."""
    primary = [0.012, 0.3, 0.5]
    secondary = [0.001] + [0.2] * 38  # 39 comparisons
    p = primary + secondary
    labels = ["primary"] * 3 + ["secondary"] * 39
    within = multiplicity.adjust_within(p, labels, "holm")
    # Primary, m = 3: 0.012 x 3 = 0.036, 0.3 x 2 = 0.6, 0.5 x 1 -> running maximum.
    assert within[:3] == pytest.approx([0.036, 0.6, 0.6])
    # Secondary, m = 39: 0.001 x 39 = 0.039; then 0.2 x 38 = 7.6 -> 1.
    assert within[3:] == pytest.approx([0.039] + [1.0] * 38)
    assert (within < 0.05).tolist() == [True, False, False, True] + [False] * 38
    one_family = multiplicity.adjust(p, "holm")
    # m = 42: 0.001 x 42 = 0.042, 0.012 x 41 = 0.492.
    assert one_family[3] == pytest.approx(0.042) and one_family[0] == pytest.approx(0.492)
    assert (one_family < 0.05).sum() == 1
    # BH within each family: primary 0.012 x 3 / 1 = 0.036; 0.3 x 3 / 2 = 0.45; 0.5.
    bh = multiplicity.adjust_within(p, labels, "bh")
    assert bh[:3] == pytest.approx([0.036, 0.45, 0.5])
    # The order of the labels does not matter, nor does an interleaving of the families.
    order = np.random.default_rng(0).permutation(42)
    shuffled = multiplicity.adjust_within(np.array(p)[order], np.array(labels)[order], "holm")
    assert shuffled == pytest.approx(within[order])
    with pytest.raises(ValueError, match="family labels"):
        multiplicity.adjust_within(p, labels[:-1])


def _known_results(differences: dict, seeds: int = 5) -> pd.DataFrame:
    """results.csv rows: the reference at 0.5 + small seed noise, each ``(arm, metric)`` at the
    reference plus the given per-seed differences."""
    noise = np.linspace(-0.01, 0.01, seeds)
    rows = []
    for metric in dict.fromkeys(m for _, m in differences):
        rows += [dict(arm="ntxent", seed=s, metric=metric, value=0.5 + noise[s]) for s in range(5)]
    for (arm, metric), values in differences.items():
        rows += [
            dict(arm=arm, seed=s, metric=metric, value=0.5 + noise[s] + values[s])
            for s in range(seeds)
        ]
    return pd.DataFrame(rows)


def test_report_with_a_primary_family_on_known_differences():
    """A primary retrieval_top1 difference with p 0.0132 survives in its family of 2 (adjusted
    0.026) and not in the study's one family of 6 (0.079); the secondary family is corrected on
    its own; the words and the table say which family each comparison is in."""
    # mean 0.03, sd sqrt(0.00025) = 0.0158: t = 0.03 / (0.0158 / sqrt(5)) = 4.24 on 4 df.
    strong = [0.01, 0.05, 0.02, 0.04, 0.03]
    differences = {
        ("cmsc", "retrieval_top1"): strong,
        ("vicreg", "retrieval_top1"): [0.01, -0.01, 0.02, -0.02, 0.0],
        ("cmsc", "sex_auroc@100"): [0.001, -0.002, 0.0015, 0.0025, -0.003],
        ("vicreg", "sex_auroc@100"): [0.01, -0.02, 0.0, 0.02, -0.01],
        ("cmsc", "age_r2@all"): [0.05, -0.05, 0.02, -0.02, 0.0],
        ("vicreg", "age_r2@all"): [0.01, 0.03, -0.01, 0.02, 0.0],
    }
    frame = _known_results(differences)
    arms = ["ntxent", "cmsc", "vicreg"]
    p = {key: stats.ttest_1samp(values, 0).pvalue for key, values in differences.items()}
    assert p["cmsc", "retrieval_top1"] == pytest.approx(2 * stats.t.sf(math.sqrt(18), 4))
    assert p["cmsc", "retrieval_top1"] == pytest.approx(0.01324, abs=1e-5)

    one = summarize(frame, arms, "ntxent")
    assert "family" not in one  # no primary family: summary.csv as before
    one = one[one["kind"] == "difference"].set_index(["arm", "metric"])
    assert one["p_adjusted"].to_numpy() == pytest.approx(
        multiplicity.adjust([p[k] for k in one.index], "holm")
    )
    assert not one["survives"].any()  # 6 x 0.0132 = 0.079

    split = summarize(frame, arms, "ntxent", primary_metrics=("retrieval_top1",))
    differences_rows = split[split["kind"] == "difference"].set_index(["arm", "metric"])
    assert (split.loc[split["kind"] == "arm", "family"] == "").all()
    primary_keys = [("cmsc", "retrieval_top1"), ("vicreg", "retrieval_top1")]
    secondary_keys = [k for k in differences if k not in primary_keys]
    assert (differences_rows.loc[primary_keys, "family"] == "primary").all()
    assert (differences_rows.loc[secondary_keys, "family"] == "secondary").all()
    assert differences_rows.loc[primary_keys, "p_adjusted"].to_numpy() == pytest.approx(
        multiplicity.adjust([p[k] for k in primary_keys], "holm")
    )
    assert differences_rows.loc[secondary_keys, "p_adjusted"].to_numpy() == pytest.approx(
        multiplicity.adjust([p[k] for k in secondary_keys], "holm")
    )
    assert differences_rows.loc[("cmsc", "retrieval_top1"), "p_adjusted"] == pytest.approx(
        2 * p["cmsc", "retrieval_top1"]
    )
    assert differences_rows.loc[("cmsc", "retrieval_top1"), "survives"]
    assert differences_rows["survives"].sum() == 1

    with_words = pd.read_csv(io.StringIO(split.to_csv(index=False)))  # as summary.csv reads
    text = plain_words(with_words)
    assert (
        "Primary family, pre-registered before any cell ran (retrieval_top1): 2 comparisons "
        "(2 arms x 1 metric) under Holm's family-wise correction at 5%. Secondary, exploratory "
        "family (every other metric): 4 comparisons (2 arms x 2 metrics), corrected on its "
        "own." in text
    )
    assert "- **cmsc**: survives the correction: higher retrieval_top1 (+0.030" in text
    assert "Within noise on 1 of 1 metric." in text
    assert text.endswith(
        "Primary family: 1 of 2 differences survive the correction. Secondary family: no "
        "difference survives the correction (smallest adjusted p "
        f"{min(multiplicity.adjust([p[k] for k in secondary_keys])):.2g})."
    )
    markdown = summary_markdown(with_words, "known")
    assert "| survives | family |" in markdown and "| yes | primary |" in markdown
    assert "adjusted within each family" in markdown
    # The same frame without the family column reads exactly as before.
    unsplit = summarize(frame, arms, "ntxent").to_csv(index=False)
    markdown = summary_markdown(pd.read_csv(io.StringIO(unsplit)), "known")
    assert "Primary family" not in markdown and "| survives |\n" in markdown
    assert "6 comparisons (2 arms x 3 metrics) under Holm's family-wise correction" in markdown


def test_published_studies_under_holm_match_an_independent_recomputation():
    """Issue 21's recomputation (own code): 42 real comparisons in the synthetic study
    (patient_supcon's 14 identically zero), 51 in the PTB-XL one; none survives Holm or BH; the
    smallest Holm-adjusted p is 0.075 (VICReg, LVH at 1,000 labels)."""
    for folder, counted, smallest in (
        ("loss_variants_synthetic", 42, None),
        ("loss_variants_ptbxl_reduced", 51, 0.0755),
    ):
        frame = pd.read_csv(STUDIES / folder / "results.csv")
        frame = frame[frame["arm"] != "random_init"]  # the untrained baseline: shown, not compared
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


def test_plan_for_a_planned_study_with_a_primary_family(tmp_path):
    """With the planned study's config, the primary metrics are planned at alpha / (primary
    metrics x arms) and the others at the secondary family's level, at its seeds."""
    from pclr_jax.study.spec import load_study

    summary = pd.DataFrame(
        dict(
            kind="difference",
            arm=["a", "b", "a", "b", "a"],
            metric=[
                "retrieval_top1",
                "retrieval_top1",
                "sex_auroc@40",
                "sex_auroc@40",
                "lvh_auroc@40",
            ],
            n=3,
            sd=[0.01, 0.02, 0.005, 0.005, 0.01],
            test_sd=np.nan,
            excluded="",
            correction="holm",
        )
    )
    summary.to_csv(tmp_path / "summary.csv", index=False)
    config = str(STUDIES.parents[1] / "configs" / "studies" / "smoke.py")
    # The smoke study: 1 arm against the reference, 6 metrics; retrieval_top1 pre-registered.
    planned = load_study(config, ["primary_metrics=('retrieval_top1',)", "seeds=(0, 1, 2, 3)"])
    text = format_plan(tmp_path, 0.03, planned=planned)
    sd = math.sqrt(0.00025)
    assert (
        "Primary family of `smoke` (pre-registered: retrieval_top1 x 1 arm): seeds needed to "
        "detect a difference of 0.03 with power 0.8, two-sided paired t test at alpha 0.05 "
        "(0.05 / 1 comparisons, Holm's family-wise correction)." in text
    )
    assert "0.05 / 5 comparisons" in text  # the secondary family: 5 other metrics x 1 arm
    primary, secondary = text.split("Secondary, exploratory family")
    assert "sex_auroc@40" not in primary and "retrieval_top1 |" not in secondary
    assert "lvh_auroc@40" not in text  # the pilot's, not a metric of the planned study
    detectable = power.minimal_detectable(sd, 4, 0.05)
    assert f"| retrieval_top1 | 0.0158 (4) | - | {detectable:.4f} | " in primary
    assert "detectable at 4 seeds" in primary
    needed = power.seeds_needed(0.03, 0.005, 0.01)
    assert "| sex_auroc@40 | 0.0050 (4) | - |" in secondary and f"| {needed} |" in secondary
    # --comparisons overrides the primary family's size; without a primary family the study is
    # one family of its 6 comparisons.
    assert "(0.05 / 3 comparisons" in format_plan(tmp_path, 0.03, comparisons=3, planned=planned)
    one = format_plan(tmp_path, 0.03, planned=load_study(config))
    assert "`smoke` (one family): seeds needed" in one and "0.05 / 6 comparisons" in one
    assert "| sex_auroc@40 |" in one and "lvh_auroc@40" not in one
    with pytest.raises(ValueError, match="the pilot has no comparison of"):
        format_plan(tmp_path, 0.03, planned=load_study(config, ["primary_metrics='age_r2@40'"]))


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
    assert "untrained" not in text  # no baseline rows, no sentence about one

    # With the untrained baseline's arm rows: one sentence for scale, from the numbers.
    arm_rows = pd.DataFrame(
        [
            dict(kind="arm", arm=arm, metric=metric, n=5, mean=mean, low=mean - 0.02,
                 high=mean + 0.02)
            for arm, metric, mean in [
                ("ntxent", "retrieval_top1", 0.75), ("ntxent", "sex_auroc@100", 0.85),
                ("random_init", "retrieval_top1", 0.22), ("random_init", "sex_auroc@100", 0.86),
            ]
        ]
    )  # fmt: skip
    text = plain_words(pd.concat([arm_rows, summary], ignore_index=True))
    assert (
        "For scale, the untrained encoder (`random_init`: the weights every arm starts from, 5 "
        "seeds, evaluated the same way): retrieval_top1 0.220 [0.200, 0.240] against `ntxent`'s "
        "0.750 [0.730, 0.770]. Its mean is at or above `ntxent`'s on 1 metric: sex_auroc@100 "
        "(0.860 vs 0.850)" in text
    )
    assert text.endswith("1 of 4 differences survive the correction.")  # comparisons unchanged
