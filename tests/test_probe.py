"""Linear probes, bootstrap intervals and learning curves against sklearn and hand-made cases."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pclr_jax.evaluation import metrics
from pclr_jax.evaluation.probe import (
    ProbeError,
    TaskSpec,
    _cv_splits,
    encode_labels,
    fit_linear_probe,
    format_summary,
    known_labels,
    learning_curve,
    linear_probe,
    summarize,
)
from pclr_jax.evaluation.resampling import resampling_plan


def gaussian_task(n=600, d=12, seed=0, n_patients=200):
    """Patients with 1-5 ECGs; a binary label carried by feature 0 plus noise features."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, n)
    y = (rng.random(n_patients) < 0.4).astype(int)[patients]
    x = rng.normal(size=(n, d))
    x[:, 0] += 1.5 * y
    return x, y, patients


# ----------------------------------------------------------------------------- metrics


def test_weighted_metrics_match_sklearn_sample_weight():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    scores = np.round(rng.normal(size=80) + y, 1)  # rounding makes ties
    target = rng.normal(size=80)
    predictions = target + rng.normal(scale=0.5, size=80)
    weights = rng.multinomial(80, np.full(80, 1 / 80), size=6).astype(float)
    auroc = metrics.weighted_auroc(y, scores, weights)
    ap = metrics.weighted_average_precision(y, scores, weights)
    r2 = metrics.weighted_r2(target, predictions, weights)
    mae = metrics.weighted_mae(target, predictions, weights)
    for i, w in enumerate(weights):
        assert auroc[i] == pytest.approx(skm.roc_auc_score(y, scores, sample_weight=w))
        assert ap[i] == pytest.approx(skm.average_precision_score(y, scores, sample_weight=w))
        assert r2[i] == pytest.approx(skm.r2_score(target, predictions, sample_weight=w))
        assert mae[i] == pytest.approx(
            skm.mean_absolute_error(target, predictions, sample_weight=w)
        )


def test_weighted_macro_matches_sklearn_and_skips_absent_classes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)  # class 3 of 4 never occurs in the test labels
    scores = rng.dirichlet(np.ones(4), 90) + np.eye(4)[y] * 0.3
    point = metrics.point_metrics(y, scores, "multiclass")
    ones = metrics.weighted_metrics(y, scores, "multiclass", np.ones((1, 90)))
    onehot = np.eye(4)[y][:, :3]
    expected_auc = np.mean([skm.roc_auc_score(onehot[:, c], scores[:, c]) for c in range(3)])
    expected_ap = np.mean(
        [skm.average_precision_score(onehot[:, c], scores[:, c]) for c in range(3)]
    )
    assert point["auroc"] == pytest.approx(expected_auc)
    assert point["auprc"] == pytest.approx(expected_ap)
    assert ones["auroc"][0] == pytest.approx(expected_auc)
    assert ones["auprc"][0] == pytest.approx(expected_ap)


def test_bootstrap_interval_equals_sklearn_on_materialised_resamples():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    scores = rng.normal(size=50) + y
    intervals = metrics.bootstrap_metrics(y, scores, "binary", n_bootstrap=200, seed=7)
    # The same draws (each row a patient, positives and negatives resampled apart), materialised
    # as index resamples and scored by sklearn one by one.
    plan = resampling_plan(None, y[:, None])
    counts = plan.patient_counts(np.random.default_rng(7), 200).astype(int)
    assert (counts[:, y == 1].sum(axis=1) == y.sum()).all()  # stratified: the positives' count
    aucs = []
    for c in counts:
        rows = np.repeat(np.arange(50), c)
        aucs.append(skm.roc_auc_score(y[rows], scores[rows]))
    assert intervals["auroc"] == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])))
    low, high = intervals["auroc"]
    assert low < skm.roc_auc_score(y, scores) < high


# ----------------------------------------------------------------------------- labels


def test_label_helpers():
    assert TaskSpec.parse("sex:binary") == TaskSpec("sex", "binary")
    assert TaskSpec.parse("age") == TaskSpec("age", "")
    assert TaskSpec.parse("age").resolve(np.linspace(20, 90, 50)).kind == "regression"
    assert TaskSpec.parse("sex").resolve(["M", "F", "F"]).kind == "binary"
    assert TaskSpec.parse("dx").resolve(["a", "b", "c"]).kind == "multiclass"
    with pytest.raises(ValueError, match="kind must be one of"):
        TaskSpec.parse("sex:logistic")
    values = pd.Series([1, 0, -1, None, 1], dtype=object)
    assert known_labels(values, "binary").tolist() == [True, True, False, False, True]
    assert known_labels(["M", "", None, "F"], "binary").tolist() == [True, False, False, True]
    assert known_labels([50.0, np.nan, -3.0], "regression").tolist() == [True, False, True]
    y, classes = encode_labels(["M", "F", "M"], "binary")
    assert y.tolist() == [1, 0, 1] and classes.tolist() == ["F", "M"]
    y, classes = encode_labels(["CD;MI", "NORM", "MI"], "multilabel")
    assert classes.tolist() == ["CD", "MI", "NORM"]
    assert y.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="exactly 2 classes"):
        encode_labels(["a", "b", "c"], "binary")


# ----------------------------------------------------------------------------- probes


def test_cv_folds_are_patient_disjoint_and_hold_every_class():
    x, y, patients = gaussian_task()
    for fit, held in _cv_splits(y, patients, "binary", 5, 0):
        assert not set(patients[fit]) & set(patients[held])
        assert set(y[fit]) == {0, 1}
    with pytest.raises(ProbeError, match="single class"):
        _cv_splits(np.zeros(10, int), None, "binary", 5, 0)
    with pytest.raises(ProbeError, match="single training example"):
        _cv_splits(np.array([0] * 9 + [1]), None, "binary", 5, 0)


def test_binary_probe_metrics_are_sklearns_on_its_own_scores():
    x, y, patients = gaussian_task()
    train, test = patients < 140, patients >= 140
    result = linear_probe(
        x[train],
        y[train],
        x[test],
        y[test],
        "binary",
        train_groups=patients[train],
        n_bootstrap=100,
    )
    probe = fit_linear_probe(x[train], y[train], "binary", patients[train])
    scores = probe.scores(x[test])
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(y[test], scores))
    assert result["auprc"] == pytest.approx(skm.average_precision_score(y[test], scores))
    assert result["auroc"] > 0.8
    assert result["auroc_ci_low"] < result["auroc"] < result["auroc_ci_high"]
    assert result["n_train"] == train.sum() and result["n_test"] == test.sum()


def test_multiclass_and_regression_probes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6))
    classes = np.array(["a", "b", "c"])[np.argmax(x[:, :3] + 0.5 * rng.normal(size=(400, 3)), 1)]
    result = linear_probe(x[:300], classes[:300], x[300:], classes[300:], "multiclass")
    y, _ = encode_labels(classes, "multiclass")
    probe = fit_linear_probe(x[:300], y[:300], "multiclass")
    proba = probe.scores(x[300:])
    assert proba.shape == (100, 3)
    assert result["auroc"] == pytest.approx(
        skm.roc_auc_score(y[300:], proba, multi_class="ovr", average="macro")
    )
    assert result["auroc"] > 0.85

    target = x @ np.array([1.0, -2.0, 0.5, 0, 0, 0]) + rng.normal(scale=0.3, size=400)
    result = linear_probe(x[:300], target[:300], x[300:], target[300:], "regression")
    assert result["r2"] > 0.95  # noise variance 0.09 of a total of about 5.3
    assert 0.15 < result["mae"] < 0.35  # mean |N(0, 0.3)| = 0.24


def test_multilabel_probe_and_multiclass_with_a_class_missing_from_training():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 5))
    labels = np.stack([x[:, 0] > 0, x[:, 1] > 0.5], axis=1).astype(int)
    result = linear_probe(x[:200], labels[:200], x[200:], labels[200:], "multilabel")
    assert result["auroc"] > 0.9
    y = np.where(x[:, 2] > 0, 1, 0)
    y[200:210] = 2  # class 2 only in the test rows: probabilities for it are zero
    probe = fit_linear_probe(x[:200], y[:200], "multiclass", n_outputs=3)
    scores = probe.scores(x[200:])
    assert scores.shape == (100, 3) and np.all(scores[:, 2] == 0)


# ----------------------------------------------------------------------------- learning curves


def test_learning_curve_splits_by_patient_and_reports_skipped_sizes():
    x, y, patients = gaussian_task()
    seen = []

    def spy(train_rows, test_rows, labels, groups, kind, n_outputs, seed):
        seen.append((tuple(train_rows), tuple(test_rows)))
        assert not set(groups[train_rows]) & set(groups[test_rows])
        return x[test_rows, 0]  # the informative feature itself as the score

    curve = learning_curve(
        {"features": x, "noise": np.random.default_rng(9).normal(size=x.shape), "spy": spy},
        y,
        patients,
        "binary",
        task_name="y",
        sizes=(50, 150, 100_000, "all"),
        repeats=2,
        n_bootstrap=50,
    )
    results = curve.results
    assert set(results["size_label"]) == {"50", "150", "all"}
    assert list(curve.skipped["size_label"]) == ["100000", "100000"]
    assert curve.skipped["reason"].str.contains("training rows available").all()
    # Nested prefixes within a repeat, identical rows for every source (checked via the spy).
    assert len(seen) == 6
    first, second, full = seen[:3]
    assert first[0] == second[0][:50] == full[0][:50] and first[1] == full[1]
    spy_auc = results.query("source == 'spy' and metric == 'auroc' and repeat == 0")
    test_rows = np.array(seen[0][1])
    assert spy_auc["value"].iloc[0] == pytest.approx(
        skm.roc_auc_score(y[test_rows], x[test_rows, 0])
    )
    full_auc = summarize(results).query("metric == 'auroc' and size_label == 'all'")
    by_source = dict(zip(full_auc["source"], full_auc["mean"], strict=True))
    assert by_source["features"] > 0.75 > 0.62 > by_source["noise"]
    assert (results["ci_low"] <= results["value"]).all() and (
        results["value"] <= results["ci_high"]
    ).all()
    text = format_summary(results)
    assert "y auroc" in text and "features" in text and "±" in text


def test_learning_curve_with_a_fixed_test_set():
    x, y, patients = gaussian_task()
    test_rows = np.flatnonzero(patients >= 150)
    curve = learning_curve(
        {"features": x},
        y,
        patients,
        "binary",
        sizes=("all",),
        repeats=1,
        n_bootstrap=0,
        test_rows=test_rows,
    )
    assert curve.results["n_test"].iloc[0] == len(test_rows)
    assert curve.results["n_train"].iloc[0] == len(x) - len(test_rows)
    assert curve.results["ci_low"].isna().all()
    with pytest.raises(ValueError, match="share patients"):
        learning_curve({"f": x}, y, patients, "binary", test_rows=np.arange(10))


def test_probe_command_reports_bad_inputs_clearly(tmp_path):
    from pclr_jax.commands.cli import main

    frame = pd.DataFrame({"sample_id": ["a", "b", "c"], "latent_0": [0.1, 0.2, 0.3]})
    frame.assign(latent_2=1.0).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(ValueError, match=r"gap.csv: expected columns latent_0 \.\. latent_"):
        main(["probe", "--embeddings", f"x={tmp_path / 'gap.csv'}", "--out", str(tmp_path)])
    frame.to_csv(tmp_path / "ok.csv", index=False)
    with pytest.raises(ValueError, match="no 'patient_id' column"):
        main(["probe", "--embeddings", f"x={tmp_path / 'ok.csv'}", "--out", str(tmp_path)])
    frame.assign(latent_0=[0.1, np.nan, 0.3]).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match="non-finite embeddings, e.g. sample 'b'"):
        main(["probe", "--embeddings", f"x={tmp_path / 'nan.csv'}", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="need --data"):
        main(["probe", "--baseline", "scratch", "--out", str(tmp_path)])


def test_probe_command_multi_hot_columns_from_the_embedding_file(tmp_path, capsys):
    """Labels may ride in the embedding file; ``--task dx`` gathers the columns ``dx_<class>``."""
    from pclr_jax.commands.cli import main

    rng = np.random.default_rng(5)
    n = 300
    x = rng.normal(size=(n, 6))
    frame = pd.DataFrame(x, columns=[f"latent_{i}" for i in range(6)])
    frame.insert(0, "sample_id", [f"s{i}" for i in range(n)])
    frame["patient_id"] = np.arange(n) // 3
    frame["dx_MI"] = (x[:, 0] > 0.3).astype(int)
    frame["dx_NORM"] = (x[:, 1] > 0).astype(int)
    frame.loc[:9, ["dx_MI", "dx_NORM"]] = -1  # unknown: left out
    frame.to_parquet(tmp_path / "emb.parquet", index=False)
    argv = ["probe", "--embeddings", f"e={tmp_path / 'emb.parquet'}", "--task", "dx"]
    argv += ["--sizes", "all", "--repeats", "1", "--bootstrap", "20", "--out", str(tmp_path)]
    assert main(argv) == 0
    results = pd.read_csv(tmp_path / "results.csv").set_index("metric")
    assert results.loc["auroc", "n_train"] + results.loc["auroc", "n_test"] == n - 10
    assert results.loc["auroc", "value"] > 0.9
    assert (
        "task dx (multilabel, 2 classes): 290 labelled ECGs, 10 without" in capsys.readouterr().err
    )


def test_probe_command_explains_a_label_file_that_matches_nothing(tmp_path):
    """Ids written as paths relative to the embedded folder against labels keyed by record name:
    a clear message with counts and examples of both sides, exit status 2, no traceback."""
    import subprocess
    import sys

    rng = np.random.default_rng(6)
    names = [f"{i:05d}_lr" for i in range(1, 31)]
    frame = pd.DataFrame(rng.normal(size=(30, 4)), columns=[f"latent_{i}" for i in range(4)])
    frame.insert(0, "sample_id", [f"records100/00000/{n}" for n in names])
    frame.to_csv(tmp_path / "emb.csv", index=False)
    labels = pd.DataFrame({"sample_id": names, "patient_id": range(30), "afib": [0, 1] * 15})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    argv = [
        "--embeddings",
        f"pclr={tmp_path / 'emb.csv'}",
        "--labels",
        str(tmp_path / "labels.csv"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pclr_jax.commands.cli", "probe", *argv, "--task", "afib:binary"]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "pclr probe: no labelled ECG has an embedding" in result.stderr
    assert "0 of 30 embeddings found a label row; 0 of 30 label rows found an embedding" in (
        result.stderr
    )
    assert "'records100/00000/00001_lr'" in result.stderr and "'00001_lr'" in result.stderr
    assert "30 would match on the record name alone" in result.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def test_dead_features_are_dropped_and_test_rows_clipped_to_the_training_range():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pclr_jax.evaluation.probe import DEFAULT_ALPHAS

    rng = np.random.default_rng(11)
    n_train, n_test = 200, 100
    n = n_train + n_test
    informative = rng.normal(size=(n, 5))
    age = informative @ np.array([3.0, -2.0, 1.0, 0.5, 0.0]) + rng.normal(size=n)
    dead = np.zeros(n)  # a ReLU channel never active on the training rows
    dead[n_train + 3] = 50.0
    near_dead = np.zeros(n)  # active on one training row, and on the test rows
    near_dead[7] = 1e-3
    near_dead[n_train:] = rng.uniform(0, 0.5, n_test)
    x = np.column_stack([informative, dead, near_dead])
    train, test = slice(0, n_train), slice(n_train, None)
    ours = fit_linear_probe(x[train], age[train], "regression").scores(x[test])

    def ridge():
        folds = _cv_splits(age[train], None, "regression", 5, 0)
        return make_pipeline(
            StandardScaler(),
            RidgeCV(alphas=DEFAULT_ALPHAS, cv=folds, scoring="neg_mean_squared_error"),
        )

    # sklearn alone on the remaining features, the test rows clipped to the training range.
    kept = x[:, [0, 1, 2, 3, 4, 6]]
    clipped = np.clip(kept[test], kept[train].min(axis=0), kept[train].max(axis=0))
    expected = ridge().fit(kept[train], age[train]).predict(clipped)
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-7)
    assert skm.r2_score(age[test], ours) > 0.8
    # Plain standardisation: the near-dead feature's test values become thousands of standard
    # deviations and the score collapses.
    naive = ridge().fit(x[train], age[train]).predict(x[test])
    assert skm.r2_score(age[test], naive) < -10
    with pytest.raises(ProbeError, match="every feature is constant"):
        fit_linear_probe(np.ones((50, 3)), age[:50], "regression")


def test_summary_flags_an_outlier_repeat():
    from pclr_jax.evaluation.probe import RESULT_COLUMNS, modified_z_scores, outlier_repeats

    wild = [0.12, -0.10, 0.20, 0.05, -125.5]  # one repeat with an absurd prediction
    calm = [0.80, 0.82, 0.79, 0.85, 0.81]
    rows = [
        dict(source=s, task="age", size=200, size_label="200", repeat=r, metric="r2", value=v)
        for s, values in (("random_init", wild), ("pclr", calm))
        for r, v in enumerate(values)
    ]
    results = pd.DataFrame(rows).reindex(columns=list(RESULT_COLUMNS))
    # median 0.05, MAD 0.15: 0.6745 * 125.55 / 0.15 = 564.5
    assert modified_z_scores(wild)[4] == pytest.approx(0.6745 * 125.55 / 0.15)
    assert outlier_repeats(results).tolist() == [False] * 4 + [True] + [False] * 5
    summary = summarize(results).set_index("source")
    assert summary.loc["random_init", "outliers"] == 1 and summary.loc["pclr", "outliers"] == 0
    assert summary.loc["random_init", "mean_kept"] == pytest.approx(np.mean(wild[:4]))
    text = format_summary(results)
    kept = f"{np.mean(wild[:4]):.3f} ± {np.std(wild[:4], ddof=1):.3f}"
    assert f"{np.mean(wild):.3f} ± {np.std(wild, ddof=1):.3f} *" in text
    assert f"age r2 n=200 random_init: repeat 4 = -125.500; without: {kept}" in text
    assert "modified z-score" in text and "> 3.5" in text
