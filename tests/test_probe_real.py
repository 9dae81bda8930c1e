"""``pclr probe`` and retrieval end to end on real PTB-XL ECGs (``tests/data``).

Embeddings are simple hand-made features and a randomly initialised small encoder; labels are
sex, age and atrial fibrillation from PTB-XL's metadata; splits are by PTB-XL patient id. Nothing
here claims a level of performance: the tests check that everything runs on real recordings,
that outputs are complete and valid, and that the metrics equal sklearn's on a fixed split.
"""

import math

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy import stats
from sklearn import metrics as skm

from pclr_jax.commands.cli import main
from pclr_jax.evaluation import (
    fit_linear_probe,
    known_labels,
    linear_probe,
    retrieval_accuracy,
    score_predictions,
)
from pclr_jax.evaluation.supervised import random_init_embeddings
from pclr_jax.model.encoder import EncoderConfig

SMALL_100HZ = EncoderConfig(
    n_samples=1000,
    unit_samples=(250, 63, 16, 4),
    unit_filters=(16, 24, 32, 48),
    stem_filters=16,
    kernel_size=7,
    head_sizes=(),
)


@pytest.fixture(scope="module")
def ptbxl(test_data_dir):
    """PTB-XL 100 Hz records of ``tests/data``: metadata frame and ECGs (N, 1000, 12) in mV."""
    meta = pd.read_csv(test_data_dir / "records.csv")
    meta = meta[meta["record"].str.contains("records100/")].reset_index(drop=True)
    ecgs = np.stack([wfdb.rdrecord(str(test_data_dir / r)).p_signal for r in meta["record"]])
    meta["sample_id"] = meta["record"]
    meta["af"] = meta["labels"].str.contains("'AFIB'").astype(int)
    assert ecgs.shape == (len(meta), 1000, 12) and np.isfinite(ecgs).all()
    return meta, ecgs.astype(np.float32)


def hand_features(ecgs):
    """Per lead: SD, mean absolute slope, range, skewness, 95th percentile above the median."""
    slope = np.abs(np.diff(ecgs, axis=1)).mean(axis=1)
    upper = np.percentile(ecgs, 95, axis=1) - np.median(ecgs, axis=1)
    parts = [ecgs.std(axis=1), slope, np.ptp(ecgs, axis=1), stats.skew(ecgs, axis=1), upper]
    return np.concatenate(parts, axis=1)


def embedding_file(path, sample_ids, features):
    frame = pd.DataFrame(features, columns=[f"latent_{i}" for i in range(features.shape[1])])
    frame.insert(0, "sample_id", sample_ids)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def probe_inputs(ptbxl, tmp_path_factory):
    """``pclr embed``-style files of hand features (Parquet) and of a random encoder (CSV), and a
    label CSV (sample_id, patient_id, sex, age, af, ecg_group)."""
    meta, ecgs = ptbxl
    root = tmp_path_factory.mktemp("probe_inputs")
    hand = embedding_file(root / "hand.parquet", meta["sample_id"], hand_features(ecgs))
    random = embedding_file(
        root / "random.csv", meta["sample_id"], random_init_embeddings(SMALL_100HZ, ecgs)
    )
    labels = root / "labels.csv"
    meta[["sample_id", "patient_id", "sex", "age", "af", "ecg_id"]].rename(
        columns={"ecg_id": "ecg_group"}
    ).to_csv(labels, index=False)
    return hand, random, labels


def test_probe_learning_curves_on_real_ecgs(ptbxl, probe_inputs, tmp_path, capsys):
    meta, _ = ptbxl
    hand, random, labels = probe_inputs
    out = tmp_path / "out"
    n = len(meta)
    code = main(
        [
            "probe",
            "--embeddings", f"hand={hand}",
            "--embeddings", f"random_init={random}",
            "--labels", str(labels),
            "--task", "sex:binary",
            "--task", "age",
            "--task", "af:binary",
            "--sizes", f"{n // 4},{10 * n},all",
            "--repeats", "2",
            "--bootstrap", "200",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    results = pd.read_csv(out / "results.csv", dtype={"size_label": str})
    assert set(results["source"]) == {"hand", "random_init"}
    assert set(results["task"]) == {"sex", "age", "af"}
    assert set(results.query("task == 'age'")["metric"]) == {"r2", "mae"}  # inferred regression
    assert set(results["size_label"].astype(str)) <= {str(n // 4), "all"}
    skipped = pd.read_csv(out / "skipped.csv", dtype={"size_label": str})
    # Every (task, size, repeat) was either fitted for both sources, with both metrics, or
    # skipped with a reason; the size larger than the data set always is.
    fitted = results.groupby(["task", "size_label", "repeat"]).size()
    for task in ("sex", "age", "af"):
        for label in (str(n // 4), "all"):
            for repeat in (0, 1):
                key = (task, label, repeat)
                covered = skipped.query(
                    "task == @task and repeat == @repeat and size_label in [@label, '*']"
                )
                assert fitted.get(key, 0) == 4 or len(covered) > 0, key
    assert fitted.sum() >= 24  # most fits ran
    oversized = skipped[skipped["size_label"] == str(10 * n)]
    assert len(oversized) == 3 * 2 and oversized["reason"].str.contains("rows available").all()
    auc = results[results["metric"].isin(["auroc", "auprc"])]
    assert auc["value"].between(0, 1).all()
    assert (results.query("metric == 'r2'")["value"] <= 1).all()
    assert (results.query("metric == 'mae'")["value"] > 0).all()
    assert (results["ci_low"] <= results["value"] + 1e-12).all()
    assert (results["value"] <= results["ci_high"] + 1e-12).all()
    assert (results["n_train"] + results["n_test"] <= n).all()
    # Age is unknown for some ECGs: those rows are left out of that task only.
    n_age = meta["age"].notna().sum()
    all_age = results.query("task == 'age' and size_label == 'all'")
    assert (all_age["n_train"] + all_age["n_test"] == n_age).all()
    png = (out / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "sex auroc" in printed.out and "age r2" in printed.out
    assert (out / "summary.txt").read_text().strip() in printed.out


def test_probe_retrieval_and_map_on_real_ecgs(ptbxl, probe_inputs, tmp_path, capsys):
    meta, _ = ptbxl
    hand, _, labels = probe_inputs
    out = tmp_path / "out"
    argv = ["probe", "--embeddings", f"hand={hand}", "--labels", str(labels), "--retrieval"]
    assert main([*argv, "--map", "sex", "--map-max-points", "250", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    png = (out / "map_hand_sex.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # Every ECG of a patient with >= 2 ECGs is a query.
    row = pd.read_csv(out / "retrieval.csv").set_index("source").loc["hand"]
    per_patient = meta.groupby("patient_id")["ecg_id"].transform("nunique")
    assert row["n_queries"] == (per_patient >= 2).sum() and row["n_ecgs"] == len(meta)
    assert 0 <= row["retrieval_top1"] <= row["retrieval_top5"] <= 1
    assert 0 < row["chance_top1"] < row["chance_top5"] < 1
    assert "retrieval hand: top-1" in printed.out


def test_metrics_on_a_fixed_patient_split_equal_sklearns(ptbxl):
    meta, ecgs = ptbxl
    x = hand_features(ecgs)
    # PTB-XL assigns strat_fold per patient, so a split by fold is patient-disjoint.
    train = (meta["strat_fold"] <= 5).to_numpy()
    assert not set(meta["patient_id"][train]) & set(meta["patient_id"][~train])
    fit_groups = meta["patient_id"].to_numpy()
    # Through linear_probe with the raw 'M'/'F' labels ('M' is the positive class) ...
    fit, test = train, ~train
    sex = meta["sex"].to_numpy()
    result = linear_probe(
        x[fit],
        sex[fit],
        x[test],
        sex[test],
        "binary",
        train_groups=fit_groups[fit],
        n_bootstrap=200,
    )
    scores = fit_linear_probe(x[fit], sex[fit] == "M", "binary", fit_groups[fit]).scores(x[test])
    assert result["n_train"] == fit.sum() and result["n_test"] == test.sum()
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(sex[test] == "M", scores))
    assert result["auprc"] == pytest.approx(skm.average_precision_score(sex[test] == "M", scores))
    assert 0 <= result["auroc_ci_low"] <= result["auroc"] <= result["auroc_ci_high"] <= 1
    # ... and fitted probes scored by score_predictions, for AF and for age (some unknown).
    af = meta["af"].to_numpy()
    scores = fit_linear_probe(x[fit], af[fit], "binary", fit_groups[fit]).scores(x[test])
    result = score_predictions(af[test], scores, "binary", n_bootstrap=200)
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(af[test], scores))
    assert result["auprc"] == pytest.approx(skm.average_precision_score(af[test], scores))
    known = known_labels(meta["age"], "regression")
    fit, test = train & known, ~train & known
    age = meta["age"].to_numpy(float)
    predictions = fit_linear_probe(x[fit], age[fit], "regression", fit_groups[fit]).scores(x[test])
    result = score_predictions(age[test], predictions, "regression", n_bootstrap=200)
    assert result["r2"] == pytest.approx(skm.r2_score(age[test], predictions))
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(age[test], predictions))
    assert result["r2_ci_low"] <= result["r2"] <= result["r2_ci_high"]


def test_retrieval_of_same_patient_ecgs(ptbxl, test_data_dir):
    meta, ecgs = ptbxl
    x = hand_features(ecgs)
    patients = meta["patient_id"].to_numpy()
    result = retrieval_accuracy(x, patients, (1, 5), meta["ecg_id"].to_numpy())
    counts = meta.groupby("patient_id")["ecg_id"].transform("nunique").to_numpy()
    queries = counts >= 2
    assert result["n_queries"] == queries.sum()
    # Chance from the metadata alone: n - 1 candidates, counts - 1 positives per query.
    n = len(meta)
    expected = np.mean([1 / (n - 1) * (c - 1) for c in counts[queries]])
    assert result["chance_top1"] == pytest.approx(expected)
    assert 0 <= result["retrieval_top1"] <= result["retrieval_top5"] <= 1
    # Adding the 500 Hz copies of the same recordings (same ecg_id) adds no query and no
    # positive pair between copies.
    all_rows = pd.read_csv(test_data_dir / "records.csv")
    copies = all_rows[all_rows["record"].str.contains("records500/")]
    copies = copies[copies["ecg_id"].isin(meta["ecg_id"])].reset_index(drop=True)
    if copies.empty:
        return
    copy_ecgs = np.stack(
        [wfdb.rdrecord(str(test_data_dir / r)).p_signal[::5] for r in copies["record"]]
    ).astype(np.float32)
    both = retrieval_accuracy(
        np.concatenate([x, hand_features(copy_ecgs)]),
        np.concatenate([patients, copies["patient_id"].to_numpy()]),
        (1, 5),
        np.concatenate([meta["ecg_id"].to_numpy(), copies["ecg_id"].to_numpy()]),
    )
    copied_queries = copies["patient_id"].map(meta.groupby("patient_id")["ecg_id"].nunique()) >= 2
    assert both["n_queries"] == result["n_queries"] + copied_queries.sum()
    assert math.isfinite(both["retrieval_top1"])
