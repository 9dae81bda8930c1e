"""The transfer evaluation (``pclr_jax.evaluation.transfer``) on constructed embeddings whose
answers are known: retrieval by hand, paired differences of identical and of perfect encoders,
probes of an informative and of an uninformative source, one copy per recording, the table; and
the several-seed summary of ``scripts/calibrate_transfer.py``: per-item results that reproduce the
values, common resamples that pair cells, the coverage of the seeds-and-patients interval over
simulated calibrations with known answers, and the default-job criteria."""

import numpy as np
import pandas as pd
import pytest

from pclr_jax.evaluation.transfer import (
    COLUMNS,
    MetricRows,
    TransferItems,
    common_deviations,
    one_copy_per_recording,
    paired_retrieval_difference,
    retrieval_rows,
    side_by_side,
    transfer_evaluation,
    transfer_items,
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


def test_items_reproduce_the_values_of_the_evaluation():
    table, sources = _labelled_set()
    options = dict(sizes=(40, 120), repeats=3, seed=4)
    frame = transfer_evaluation(
        sources,
        table,
        ("label:binary", "age:regression"),
        n_bootstrap=10,
        probe_bootstrap=0,
        **options,
    )
    rows, items = transfer_items(sources, table, ("label:binary", "age:regression"), **options)
    value = frame.set_index(["source", "metric"])["value"]
    assert set(items) == set(frame["metric"])
    for metric, by_source in items.items():
        ones = np.ones((1, len(rows[metric].patients)))
        for source, cell in by_source.items():
            assert cell.value(ones)[0] == pytest.approx(value[(source, metric)], abs=1e-9)
    assert rows["label_auroc@40"].n == 40 and rows["label_auroc@40"].indicator is not None
    assert rows["retrieval_top1"].chance == pytest.approx(value[("chance", "retrieval_top1")])
    assert len(items["label_auroc@120"]["good"].parts) == 3  # one part per repeat


def test_common_deviations_pair_identical_cells():
    rng = np.random.default_rng(0)
    patients = _patients(40, 2)
    hits = rng.uniform(size=80)
    cell = TransferItems("retrieval", ((np.arange(80), None, hits),))
    other = TransferItems("retrieval", ((np.arange(80), None, rng.uniform(size=80)),))
    deviations = common_deviations(
        MetricRows(patients), {"a": cell, "b": cell, "c": other}, 200, seed=1, metric="m"
    )
    assert np.array_equal(deviations["a"], deviations["b"])  # the same draws for every cell
    assert deviations["a"].shape == (200,) and abs(deviations["a"].mean()) < 0.02
    # A patient bootstrap of a mean over 40 patients of 2 queries: sd(patient means) / sqrt(40)
    expected = hits.reshape(40, 2).mean(axis=1).std() / np.sqrt(40)
    assert deviations["a"].std() == pytest.approx(expected, rel=0.25)
    assert not np.array_equal(deviations["a"], deviations["c"])


def _simulated_items(rng, n_patients, seeds, shift=0.0, patient_effects=None):
    """Retrieval hits (expected hits in [0, 1]) of one encoder per training seed: 0.5 + shift +
    a patient effect shared by every seed (uniform +-0.3) + a seed effect (sd 0.005) + a
    seed-by-query part (sd 0.03), one query per patient: a known population mean 0.5 + shift."""
    v = rng.uniform(-0.3, 0.3, n_patients) if patient_effects is None else patient_effects
    out = {}
    for k in seeds:
        hits = 0.5 + shift + v + rng.normal(0, 0.005) + rng.normal(0, 0.03, n_patients)
        out[k] = TransferItems("retrieval", ((np.arange(n_patients), None, hits),))
    return out, v


def test_seed_summary_covers_known_means_and_differences():
    """Over simulated calibrations (new test patients and new seeds each time) the interval of a
    source's mean and of its difference to the reference cover the known values about 95 % of the
    time: both the seeds and the test patients are in the interval. Here the test patients
    dominate, and an interval over the seeds alone covers the mean far less often."""
    summary = _script("calibrate_transfer").seed_summary
    rng = np.random.default_rng(0)
    seeds, n_patients, studies = (0, 1, 2), 120, 300
    covered = {"mean": 0, "diff": 0}
    seed_only, test_sds = 0, []
    for study in range(studies):
        reference, v = _simulated_items(rng, n_patients, seeds)
        candidate, _ = _simulated_items(rng, n_patients, seeds, shift=0.05, patient_effects=v)
        items_by_seed = {
            k: {"retrieval_top1": {"ref": reference[k], "cand": candidate[k]}} for k in seeds
        }
        rows, seed_rows = summary(
            {"retrieval_top1": MetricRows(np.arange(n_patients))},
            items_by_seed,
            reference="ref",
            n_bootstrap=200,
            seed=study,
        )
        by_source = {r["source"]: r for r in rows}
        ref, cand = by_source["ref"], by_source["cand"]
        covered["mean"] += ref["ci_low"] <= 0.5 <= ref["ci_high"]
        covered["diff"] += cand["diff_ci_low"] <= 0.05 <= cand["diff_ci_high"]
        values = [r["value"] for r in seed_rows if r["source"] == "ref"]
        half = 4.303 * np.std(values, ddof=1) / np.sqrt(len(seeds))  # t(2) 97.5 %
        seed_only += abs(np.mean(values) - 0.5) <= half
        test_sds.append(ref["test_sd"])
        assert ref["seeds"] == 3 and np.isnan(ref["diff"])
    assert 0.91 <= covered["mean"] / studies <= 0.99
    assert 0.91 <= covered["diff"] / studies <= 0.99
    # The test-set part: sd(patient effect) / sqrt(120) = 0.0158.
    assert np.median(test_sds) == pytest.approx(0.3 / np.sqrt(3) / np.sqrt(n_patients), rel=0.2)
    assert seed_only / studies < 0.8


def test_seed_summary_of_an_identical_source_and_one_seed():
    summary = _script("calibrate_transfer").seed_summary
    rng = np.random.default_rng(3)
    items, _ = _simulated_items(rng, 50, (0, 1))
    rows, _ = summary(
        {"retrieval_top1": MetricRows(np.arange(50), n=50, chance=0.02)},
        {k: {"retrieval_top1": {"ref": items[k], "same": items[k]}} for k in (0, 1)},
        reference="ref",
        n_bootstrap=100,
    )
    same = next(r for r in rows if r["source"] == "same")
    assert (same["diff"], same["diff_ci_low"], same["diff_ci_high"]) == (0.0, 0.0, 0.0)
    assert next(r for r in rows if r["source"] == "chance")["value"] == 0.02
    rows, _ = summary(
        {"retrieval_top1": MetricRows(np.arange(50))},
        {0: {"retrieval_top1": {"ref": items[0]}}},
        n_bootstrap=100,
    )
    assert rows[0]["seeds"] == 1 and np.isnan(rows[0]["ci_low"])  # one seed: no interval


def _result(cand_lvh_random, cand_probe_diffs, cand_probe_highs):
    rows = [
        dict(
            source="cand", metric="retrieval_top1", diff=0.01, diff_ci_low=-0.05, diff_ci_high=0.07
        )
    ]
    for i, (diff, high) in enumerate(zip(cand_probe_diffs, cand_probe_highs, strict=True)):
        rows.append(
            dict(
                source="cand",
                metric=f"t{i}_auroc@100",
                diff=diff,
                diff_ci_low=diff - 0.1,
                diff_ci_high=high,
            )
        )
    rows += [
        dict(source="ref", metric=r["metric"], diff=None, diff_ci_low=None, diff_ci_high=None)
        for r in rows
    ]
    synthetic = {
        "ref": {
            "seed0": {
                "pclr": {"lvh_auroc": 0.97, "retrieval_top1": 0.99},
                "random_init": {"lvh_auroc": 0.96},
            }
        },
        "cand": {
            "seed0": {
                "pclr": {"lvh_auroc": 0.93, "retrieval_top1": 0.80},
                "random_init": {"lvh_auroc": cand_lvh_random},
            },
            "seed1": {
                "pclr": {"lvh_auroc": 0.95, "retrieval_top1": 0.82},
                "random_init": {"lvh_auroc": cand_lvh_random},
            },
        },
    }
    return {
        "configs": ["ref", "cand"],
        "reference": "ref",
        "synthetic": synthetic,
        "evaluations": {"real_ecg_dev": {"rows": rows}},
    }


def test_criteria_from_constructed_results():
    script = _script("calibrate_transfer")
    ref, cand = script.criteria(_result(0.90, [0.02, -0.01], [0.1, 0.05]))
    assert not ref["lvh"] and not ref["synthetic_retrieval"] and "meets_all" not in ref
    assert cand["lvh_pclr"] == pytest.approx(0.94) and cand["lvh"]
    assert cand["synthetic_retrieval"] and cand["real_retrieval"]
    assert cand["probe_mean_diff"] == pytest.approx(0.005) and cand["probe_cells_at_or_above"] == 1
    assert cand["probes"] and cand["meets_all"]
    # A resolved deficit in one cell fails the probes even with a positive mean difference.
    cand = script.criteria(_result(0.90, [0.05, -0.01], [0.1, -0.001]))[1]
    assert cand["probe_cells_resolved_below"] == ["t1_auroc@100"] and not cand["meets_all"]
    # Random init above 0.95 (or PCLR not above it) fails LVH.
    assert not script.criteria(_result(0.96, [0.02, 0.0], [0.1, 0.1]))[1]["lvh"]
    assert not script.criteria(_result(0.945, [0.02, 0.0], [0.1, 0.1]))[1]["lvh"]
    table = script.criteria_table(_result(0.90, [0.02, -0.01], [0.1, 0.05]))
    assert table.splitlines()[-1].endswith("| yes |")
