"""Patient-level, class-stratified bootstrap intervals (``pclr_jax.evaluation.resampling``) on
constructed test sets with known answers: every class keeps positives and negatives in every
resample, duplicated ECGs of one patient count once, the point estimate lies inside its interval
in the PTB-XL-like case of many rare classes, and retrieval intervals match the binomial width."""

import numpy as np
import pytest
from sklearn import metrics as skm

from pclr_jax.evaluation import metrics
from pclr_jax.evaluation.resampling import resampling_plan
from pclr_jax.evaluation.retrieval import retrieval_intervals


def ptbxl_like(seed=0, n_patients=1900, n_classes=71):
    """About 2,200 ECGs of 1,900 patients (1-3 ECGs each) and 71 multi-label statements whose
    prevalence falls from 40% to a single ECG, as PTB-XL's fold 10; scores carry each label."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), rng.choice([1, 1, 1, 1, 1, 1, 2, 3], n_patients))
    n = len(patients)
    prevalence = 0.4 * np.geomspace(1.0, 1.0 / (0.4 * n), n_classes)
    patient_labels = rng.random((n_patients, n_classes)) < prevalence
    y = patient_labels[patients].astype(np.int64)
    rare = np.flatnonzero(y.sum(axis=0) == 0)
    y[rng.integers(0, n, len(rare)), rare] = 1  # every class occurs at least once
    scores = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + 1.5 * y - 2)))
    return y, scores, patients


def test_every_scored_class_keeps_positives_and_negatives_in_every_resample():
    y, _, patients = ptbxl_like()
    plan = resampling_plan(patients, y)
    positives = np.zeros((patients.max() + 1, y.shape[1]), bool)
    np.logical_or.at(positives, patients, y.astype(bool))
    assert (positives.sum(axis=0) <= 5).sum() >= 16  # as many rare classes as PTB-XL's fold 10
    rng = np.random.default_rng(1)
    counts = plan.patient_counts(rng, 300)
    for stratum in plan.strata:  # each stratum is resampled to its own size
        assert (counts[:, stratum].sum(axis=1) == len(stratum)).all()
    weights = counts[:, np.unique(patients, return_inverse=True)[1]]
    positive_weight = weights @ y
    negative_weight = weights @ (1 - y)
    assert (positive_weight > 0).all() and (negative_weight > 0).all()
    # A naive patient bootstrap loses some rare class in most resamples.
    naive = rng.multinomial(len(positives), np.full(len(positives), 1 / len(positives)), 300)
    assert ((naive @ positives) == 0).any(axis=1).mean() > 0.5


def test_point_estimate_inside_its_interval_with_many_rare_classes():
    y, scores, patients = ptbxl_like()
    point = metrics.point_metrics(y, scores, "multilabel")
    intervals = metrics.bootstrap_metrics(
        y, scores, "multilabel", n_bootstrap=100, seed=3, groups=patients
    )
    for name in ("auroc", "auprc"):
        low, high = intervals[name]
        assert low < point[name] < high, (name, low, point[name], high)
    # The ECG-level bootstrap that dropped a class from a resample when it drew none of its
    # positives averaged over fewer, more common classes: its macro AUPRC lies above the point.
    rng = np.random.default_rng(3)
    weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), 100).astype(float)
    per_class = np.stack(
        [metrics.weighted_average_precision(y[:, c], scores[:, c], weights) for c in range(71)],
        axis=1,
    )
    assert np.percentile(np.nanmean(per_class, axis=1), 2.5) > point["auprc"]


def test_copies_of_a_patient_count_once():
    """Three identical ECGs per patient: the patient bootstrap gives exactly the interval of one
    ECG per patient; an ECG bootstrap would be about sqrt(3) too narrow."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 150)
    scores = rng.normal(size=150) + y
    copies = np.repeat(np.arange(150), 3)
    one = metrics.bootstrap_metrics(y, scores, "binary", 400, seed=5)
    three = metrics.bootstrap_metrics(y[copies], scores[copies], "binary", 400, 0.95, 5, copies)
    assert three == {name: pytest.approx(bounds, abs=1e-12) for name, bounds in one.items()}
    by_ecg = metrics.bootstrap_metrics(y[copies], scores[copies], "binary", 400, seed=5)
    width = {name: np.subtract(*one[name][::-1]) for name in one}
    assert np.subtract(*by_ecg["auroc"][::-1]) < 0.75 * width["auroc"]


def test_interval_note_names_the_classes_it_cannot_cover():
    # class 0: 3 positive patients; class 1: one positive patient (two ECGs); class 2: none.
    y = np.zeros((10, 3), int)
    y[[0, 1, 2], 0] = 1
    y[[3, 4], 1] = 1
    patients = np.array([0, 1, 2, 3, 3, 4, 5, 6, 7, 8])
    note = metrics.interval_note(y, "multilabel", 3, patients, ["NORM", "WPW", "LPR"])
    assert note == (
        "not in the macro average (no positive or no negative test ECG): LPR; a single "
        "positive or negative test patient, kept in every resample (its noise is not in the "
        "interval): WPW"
    )
    assert metrics.interval_note(y[:, 0], "binary", groups=patients) == ""
    assert metrics.interval_note(np.arange(10.0), "regression") == ""
    # The single WPW patient is drawn exactly once in every resample.
    plan = resampling_plan(patients, y)
    assert plan.thin_classes == (1,)
    assert (plan.patient_counts(np.random.default_rng(0), 50)[:, 3] == 1).all()


def test_retrieval_interval_is_the_binomial_width_over_patients():
    """400 patients with one query each hitting with probability 0.3: the 95% interval is about
    0.3 ± 1.96 sqrt(0.3 * 0.7 / 400). Two identical queries per patient give the same interval:
    the patient, not the query, is the unit."""
    hits = (np.arange(400) % 10 < 3).astype(float)  # exactly 30% of the patients hit
    result = {"hits_top1": hits, "query_rows": np.arange(400)}
    bounds = retrieval_intervals(result, np.arange(400), n_bootstrap=4000, seed=0)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 400)
    assert bounds["retrieval_top1_ci_low"] == pytest.approx(0.3 - half, abs=0.004)
    assert bounds["retrieval_top1_ci_high"] == pytest.approx(0.3 + half, abs=0.004)
    doubled = {"hits_top1": np.repeat(hits, 2), "query_rows": np.arange(800)}
    twice = retrieval_intervals(doubled, np.repeat(np.arange(400), 2), n_bootstrap=4000, seed=0)
    assert twice == pytest.approx(bounds)


def test_weighted_macro_is_undefined_when_a_class_is_missing():
    """A resample without a class's positives has no macro value (never a mean over fewer
    classes)."""
    y = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.3, 0.3], [0.7, 0.6]])
    weights = np.array([[1.0, 0, 1, 0], [1, 1, 1, 1]])  # the first draws no positive of class 1
    macro = metrics.weighted_metrics(y, scores, "multilabel", weights)["auroc"]
    assert np.isnan(macro[0])
    assert macro[1] == pytest.approx(skm.roc_auc_score(y, scores, average="macro"))
