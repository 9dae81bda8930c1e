"""The transfer evaluation (``pclr_jax.evaluation.transfer``) on constructed embeddings whose
answers are known: retrieval by hand, paired differences of identical and of perfect encoders,
probes of an informative and of an uninformative source, one copy per recording, the table."""

import numpy as np
import pandas as pd
import pytest

from pclr_jax.evaluation.transfer import (
    COLUMNS,
    one_copy_per_recording,
    paired_retrieval_difference,
    retrieval_rows,
    side_by_side,
    transfer_evaluation,
)


def _patients(n_patients, per_patient):
    return np.repeat(np.arange(n_patients), per_patient)


def test_retrieval_by_hand_and_paired_difference_to_itself():
    # Three patients with two ECGs each on a line: a0 a1 b0 b1 c0 c1, but b1 sits next to c0.
    x = np.array([[1, 0.0], [1, 0.05], [0, 1], [0.7, 0.7], [0.68, 0.72], [0.66, 0.74]])
    patients = np.array(["a", "a", "b", "b", "c", "c"])
    rows = retrieval_rows({"enc": x, "same": x.copy()}, patients, reference="enc", ks=(1,))
    by_source = {r["source"]: r for r in rows}
    # Nearest neighbours (cosine): a0->a1, a1->a0, b0->c1, b1->c0, c0->c1, c1->c0: 4 hits of 6.
    assert by_source["enc"]["value"] == pytest.approx(4 / 6)
    assert by_source["enc"]["n"] == 6
    assert by_source["enc"]["ci_low"] <= 4 / 6 <= by_source["enc"]["ci_high"]
    # An identical encoder: difference 0 in every resample.
    same = by_source["same"]
    assert (same["diff"], same["diff_ci_low"], same["diff_ci_high"]) == (0.0, 0.0, 0.0)
    # Chance: each query ranks 1 positive among 5 candidates.
    assert by_source["chance"]["value"] == pytest.approx(1 / 5)


def test_perfect_encoder_beats_random_with_an_interval_above_zero():
    rng = np.random.default_rng(0)
    patients = _patients(60, 2)
    perfect = np.eye(60)[patients] + 0.01 * rng.normal(size=(120, 60))
    noise = rng.normal(size=(120, 60))
    rows = retrieval_rows(
        {"random_init": noise, "perfect": perfect}, patients, reference="random_init", ks=(1, 5)
    )
    top1 = {r["source"]: r for r in rows if r["metric"] == "retrieval_top1"}
    assert top1["perfect"]["value"] == 1.0
    assert top1["perfect"]["diff"] == pytest.approx(1.0 - top1["random_init"]["value"])
    assert top1["perfect"]["diff_ci_low"] > 0.5
    assert np.isnan(top1["random_init"]["diff"])  # the reference is not compared with itself


def test_paired_difference_resamples_patients_not_queries():
    # Patient 0 has 10 queries that favour a, patient 1 has 10 that favour b: the interval over
    # patients spans both signs, while ECG resampling would have called it resolved (0 +- 0.2).
    patients = np.repeat([0, 1, 2, 3], [10, 10, 1, 1])
    a = np.r_[np.ones(10), np.zeros(10), 0.5, 0.5]
    b = np.r_[np.zeros(10), np.ones(10), 0.5, 0.5]
    result = paired_retrieval_difference(a, b, patients, n_bootstrap=2000, seed=1)
    assert result["diff"] == pytest.approx(0.0)
    assert result["diff_ci_low"] < -0.5 and result["diff_ci_high"] > 0.5
    with pytest.raises(ValueError):
        paired_retrieval_difference(a, b[:-1], patients)


def _labelled_set(n_patients=150, seed=0):
    rng = np.random.default_rng(seed)
    patients = _patients(n_patients, 2)
    label = rng.integers(0, 2, n_patients)[patients].astype(float)
    age = rng.uniform(20, 90, n_patients)[patients]
    label[::17] = np.nan  # unknown labels are left out of that task only
    table = pd.DataFrame({"patient_id": patients, "label": label, "age": age})
    informative = np.c_[np.nan_to_num(label, nan=0.5), (age - 55) / 20]
    informative = informative + 0.01 * rng.normal(size=informative.shape)
    return table, {"random_init": rng.normal(size=(len(table), 2)), "good": informative}


def test_probes_know_an_informative_from_an_uninformative_source():
    table, sources = _labelled_set()
    frame = transfer_evaluation(
        sources,
        table,
        ("label:binary", "age:regression"),
        reference="random_init",
        sizes=(40, 120),
        repeats=3,
        n_bootstrap=100,
        probe_bootstrap=50,
    )
    assert list(frame.columns) == list(COLUMNS)
    cell = frame.set_index(["source", "metric"])
    assert cell.loc[("good", "label_auroc@120"), "value"] > 0.99
    assert abs(cell.loc[("random_init", "label_auroc@120"), "value"] - 0.5) < 0.15
    assert cell.loc[("good", "age_r2@120"), "value"] > 0.99
    assert cell.loc[("random_init", "age_r2@120"), "value"] < 0.1
    good = cell.loc[("good", "label_auroc@40")]
    assert good["diff"] == pytest.approx(
        good["value"] - cell.loc[("random_init", "label_auroc@40"), "value"]
    )
    assert good["n"] == 40 and good["ci_low"] <= good["ci_high"]
    assert np.isfinite(good["sd"])
    table_text = side_by_side(frame, ["random_init", "good", "chance"])
    assert table_text.splitlines()[0] == "| metric | random_init | good | chance |"
    assert any(line.startswith("| label_auroc@120 | ") for line in table_text.splitlines())


def test_sources_must_match_the_table():
    table, sources = _labelled_set(20)
    with pytest.raises(ValueError, match="rows"):
        transfer_evaluation({"x": sources["good"][:-1]}, table)
    with pytest.raises(ValueError, match="reference"):
        transfer_evaluation(sources, table, reference="missing")


def test_one_copy_per_recording():
    table = pd.DataFrame(
        {
            "ecg_group": ["e1", "e1", "e2", None, None, "e3", "e3"],
            "sampling_rate": [100, 500, 100, 100, 100, 500, 500],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    assert one_copy_per_recording(table).index.tolist() == [10, 12, 13, 14, 15]
    kept = one_copy_per_recording(table, rank_column="sampling_rate")
    assert kept.index.tolist() == [11, 12, 13, 14, 15]


def _script(name):
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_the_docs_calibration_tables_are_generated_from_the_raw_output():
    """docs/data.md's transfer and statistics tables equal what the scripts render from the
    committed JSON (docs/calibration/), so no number there is typed by hand."""
    import json
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "data.md").read_text()
    transfer = _script("calibrate_transfer")
    raw = json.loads((root / "docs" / "calibration" / "transfer.json").read_text())
    assert transfer.doc_block(doc, "transfer") == transfer.render(raw)
    statistics = _script("calibrate_synthetic")
    raw = json.loads((root / "docs" / "calibration" / "statistics.json").read_text())
    assert transfer.doc_block(doc, "statistics") == statistics.markdown_table(raw["columns"]) + "\n"
    assert len(raw["validation"]) >= 2
