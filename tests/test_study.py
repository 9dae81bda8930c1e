"""``pclr study``: the statistics against hand-computed values, the report from known cells, and
a tiny study end to end (killed and resumed; cells run one by one give the same report).

Studies run through the ``pclr`` command in subprocesses (8 faked CPU devices, inherited from
conftest), as a user or a cluster array job starts them.
"""

import json
import math
import pathlib
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from pclr_jax.study import cell, runner, statistics
from pclr_jax.study.report import formulation_lines, write_report
from pclr_jax.study.spec import load_study

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "studies" / "smoke.py")
# Student's t 0.975 quantile with 2 degrees of freedom (statistical tables: 4.303).
T_975_DF2 = 4.302652729911275


# ----------------------------------------------------------------------------- statistics


def test_t_interval_of_three_seeds_by_hand():
    # mean 0.72, sd 0.02, standard error 0.02 / sqrt(3)
    interval = statistics.t_interval([0.70, 0.74, 0.72])
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.72)
    assert interval.sd == pytest.approx(0.02)
    assert (interval.low, interval.high) == pytest.approx((0.72 - half, 0.72 + half))
    assert (interval.low, interval.high) == pytest.approx((0.670317, 0.769683), abs=1e-6)


def test_paired_difference_by_hand():
    arm = {0: 0.80, 1: 0.83, 2: 0.79, 3: 0.99}  # seed 3 has no reference: left out
    reference = {0: 0.75, 1: 0.80, 2: 0.76}
    difference = statistics.paired_difference(arm, reference)
    # differences 0.05, 0.03, 0.03: mean 0.11/3, sd sqrt(0.0004/3), t = 5.5 with 2 df
    mean, sd = 0.11 / 3, math.sqrt(0.0004 / 3)
    half = T_975_DF2 * sd / math.sqrt(3)
    assert difference.n == 3
    assert difference.mean == pytest.approx(mean)
    assert (difference.low, difference.high) == pytest.approx((mean - half, mean + half))
    # two-sided p of t = 5.5 with 2 df: 1 - t / sqrt(t^2 + 2)
    assert difference.p_value == pytest.approx(1 - 5.5 / math.sqrt(5.5**2 + 2))
    assert difference.resolved
    # The same values unpaired overlap: pairing is what resolves this difference.
    assert (
        statistics.t_interval([0.80, 0.83, 0.79]).low
        < statistics.t_interval([0.75, 0.80, 0.76]).high
    )


def test_degenerate_intervals():
    assert math.isnan(statistics.t_interval([0.5]).low)
    assert statistics.t_interval([0.5]).mean == 0.5
    flat = statistics.t_interval([1.0, 1.0, 1.0])
    assert (flat.low, flat.high) == (1.0, 1.0)
    zero = statistics.paired_difference({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})
    assert (zero.mean, zero.low, zero.high) == (0.0, 0.0, 0.0) and not zero.resolved
    # One query more out of 522 at both seeds: no spread to judge it by, so not resolved.
    step = statistics.paired_difference({0: 137 / 522, 1: 140 / 522}, {0: 136 / 522, 1: 139 / 522})
    assert step.mean == pytest.approx(1 / 522) and step.constant and not step.resolved
    assert not statistics.paired_difference({0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.7}).constant
    assert statistics.t_interval([np.nan, 2.0, 4.0]).n == 2


# ----------------------------------------------------------------------------- spec


def test_study_spec_validates_and_refuses_another_study(tmp_path):
    spec = load_study(SMOKE)
    assert spec.cells() == [("ntxent", 0), ("warm", 0), ("ntxent", 1), ("warm", 1)]
    assert spec.run_order("base") == [
        ("ntxent", 0), ("warm", 0), ("base", 0), ("ntxent", 1), ("warm", 1), ("base", 1),
    ]  # fmt: skip
    # The baseline cell's config: the base one (no arm's overrides) at the seed.
    assert spec.cell_config(None, 1).to_dict() == {**spec.base.to_dict(), **{
        "seed": 1, "eval": spec.cell_config("ntxent", 1).eval.to_dict()}}  # fmt: skip
    assert spec.cell_config("warm", 1).loss.hparams.temperature == 0.5
    assert spec.cell_config("warm", 1).seed == 1
    with pytest.raises(KeyError, match="no field 'total_stepz'"):
        load_study(SMOKE, ["base.total_stepz=3"])
    with pytest.raises(ValueError, match="reference_arm 'nope'"):
        load_study(SMOKE, ["reference_arm='nope'"])
    runner.record_study(spec, tmp_path, {"config": SMOKE, "set": []})
    runner.record_study(spec, tmp_path, {"config": SMOKE, "set": []})  # same study: fine
    with pytest.raises(runner.StudyMismatchError, match="arms"):
        runner.record_study(
            load_study(SMOKE, ["arms=(('a', {}),)", "reference_arm='a'"]), tmp_path, {}
        )
    # More seeds extend the same study.
    runner.record_study(load_study(SMOKE, ["seeds=(2,)"]), tmp_path, {})
    assert json.loads((tmp_path / runner.STUDY_FILE).read_text())["study"]["seeds"] == [0, 1, 2]


def test_baseline_cell_weights_are_those_training_starts_from():
    """``random_init``'s encoder is ``init_variables`` at the first of the run's two keys: the
    very weights ``create_train_state`` gives the run at that seed."""
    import jax
    import optax

    from pclr_jax.losses import get_loss
    from pclr_jax.model.encoder import EncoderConfig, init_variables
    from pclr_jax.runtime.distributed import make_mesh
    from pclr_jax.step.train_state import create_train_state, weight_and_dropout_keys

    config = EncoderConfig(
        n_samples=64,
        n_leads=2,
        stem_filters=4,
        unit_samples=(16, 4),
        unit_filters=(4, 8),
        kernel_size=5,
        head_sizes=(8, 8),
    )
    key = jax.random.key(7)
    state = create_train_state(config, get_loss("ntxent"), optax.sgd(0.1), key, make_mesh())
    variables = init_variables(config, weight_and_dropout_keys(key)[0])
    trained_from = {"params": state.params["model"], "batch_stats": state.batch_stats}
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(trained_from), variables)
    other_seed = init_variables(config, weight_and_dropout_keys(jax.random.key(8))[0])
    kernels = [
        leaf
        for tree in (other_seed, variables)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree["params"])
        if "kernel" in jax.tree_util.keystr(path)
    ]
    assert not np.array_equal(kernels[0], kernels[len(kernels) // 2])  # another seed differs


def test_primary_family_is_validated_and_fixed_before_the_first_cell(tmp_path):
    """``primary_metrics`` names metrics the study reports, is recorded in study.json only when
    set (older studies are described as before), and cannot be added to or changed in a workdir
    that holds the study: it is pre-registered."""
    spec = load_study(SMOKE)
    assert spec.primary_metrics == () and "primary_metrics" not in spec.to_json()
    # 2 retrieval metrics + 2 tasks x 2 sizes; one arm against the reference.
    assert spec.comparisons() == (0, 6)
    primary = load_study(SMOKE, ["primary_metrics=('retrieval_top1', 'age_r2@40')"])
    assert primary.primary_metrics == ("retrieval_top1", "age_r2@40")
    assert primary.to_json()["primary_metrics"] == ["retrieval_top1", "age_r2@40"]
    assert primary.comparisons() == (2, 4)
    assert load_study(SMOKE, ["primary_metrics='sex_auroc@all'"]).primary_metrics == (
        "sex_auroc@all",
    )
    for wrong in ("'retrieval_top2'", "('sex_r2@40',)", "('age_r2@41',)"):
        with pytest.raises(ValueError, match="is not a metric of this study"):
            load_study(SMOKE, [f"primary_metrics={wrong}"])
    runner.record_study(spec, tmp_path, {"config": SMOKE, "set": []})
    with pytest.raises(runner.StudyMismatchError, match="pre-registered"):
        runner.record_study(primary, tmp_path, {})
    other = tmp_path / "other"
    runner.record_study(primary, other, {})
    runner.record_study(primary, other, {})  # the same primary family: the same study
    with pytest.raises(runner.StudyMismatchError, match="pre-registered"):
        runner.record_study(load_study(SMOKE, ["primary_metrics=('age_r2@40',)"]), other, {})


def test_full_loss_study_config():
    """configs/studies/loss_variants_full.py: the default job exactly but for its data, pinned to
    the pilot's cpu_realistic; the four distinct losses at their recommended settings, retrieval
    top-1 pre-registered, 5 to 10 seeds."""
    from configs import default, loss_variants

    spec = load_study(str(REPO / "configs" / "studies" / "loss_variants_full.py"))
    expected = default.get_config()
    expected.data.config = "cpu_realistic"
    assert spec.base.to_dict() == expected.to_dict()
    assert spec.arm_names == ("ntxent", "cmsc", "siglip", "vicreg")
    assert spec.reference_arm == "ntxent"
    for arm in spec.arms:
        config = spec.cell_config(arm.name, 0)
        assert config.loss.name == arm.name
        assert config.loss.hparams.to_dict() == loss_variants.RECOMMENDED_HPARAMS[arm.name]
        assert spec.budget(arm.name) == spec.budget("ntxent")
    budget = spec.budget("ntxent")
    assert (budget["steps"], budget["batch_pairs"], budget["ecgs_seen"]) == (360, 64, 46080)
    assert spec.base.model.unit_filters == (64, 96, 128, 160)  # half the released widths
    assert spec.primary_metrics == ("retrieval_top1",)
    assert spec.comparisons() == (3, 39)
    assert 5 <= len(spec.seeds) <= 10 and spec.seeds == tuple(range(len(spec.seeds)))


# ----------------------------------------------------------------------------- report


def _write_result(study_dir, arm, seed, metrics, steps=6):
    directory = cell.cell_directory(study_dir, arm, seed)
    directory.mkdir(parents=True)
    budget = {
        "data": "pclr_synthetic/tiny:train",
        "steps": steps,
        "batch_pairs": 8,
        "ecgs_seen": 16 * steps,
        "model_input": "256x12",
    }
    machine = {
        "cpu_model": "test",
        "cpu_flags": [],
        "cores": 2,
        "memory_gib": 1.0,
        "jax": "x",
        "jax_backend": "cpu",
    }
    result = dict(arm=arm, seed=seed, metrics=metrics, budget=budget, machine=machine)
    cell.write_json_atomically(
        directory / cell.RESULT, {**result, "train_wall_s": 1.0, "eval_wall_s": 1.0}
    )


def test_report_of_known_cells(tmp_path):
    """Arms and values set by hand: the tables, the verdicts, a failed cell, a budget slip."""
    spec = load_study(SMOKE, ["seeds=(0, 1, 2)"])
    runner.record_study(spec, tmp_path, {"config": SMOKE, "set": ["seeds=(0, 1, 2)"]})
    reference = [0.75, 0.80, 0.76]
    warm = [0.80, 0.83, 0.79]
    top5 = [0.5, 0.6, 0.7]  # warm: one query more of 522 at each seed
    for seed in range(3):
        _write_result(
            tmp_path,
            "ntxent",
            seed,
            {"retrieval_top1": reference[seed], "retrieval_top5": top5[seed], "age_r2@all": 0.1},
        )
    for seed in range(2):  # seed 2 of "warm" failed; it also trained fewer steps
        metrics = {"retrieval_top1": warm[seed], "retrieval_top5": top5[seed] + 1 / 522}
        _write_result(tmp_path, "warm", seed, {**metrics, "age_r2@all": 0.1}, steps=5)
    cell.record_failure(tmp_path, "warm", 2, MemoryError("out of memory"))

    report = write_report(tmp_path).read_text()
    summary = pd.read_csv(tmp_path / "summary.csv")
    arm_row = summary[(summary.kind == "arm") & (summary.arm == "ntxent")]
    arm_row = arm_row[arm_row.metric == "retrieval_top1"].iloc[0]
    expected = statistics.t_interval(reference)
    assert (arm_row["mean"], arm_row["low"], arm_row["high"]) == pytest.approx(
        (0.77, expected.low, expected.high)
    )
    difference = summary[(summary.kind == "difference") & (summary.metric == "retrieval_top1")]
    difference = difference.iloc[0]
    # matched seeds 0 and 1: differences 0.05 and 0.03, sd sqrt(0.0002), t(0.975, 1) = 12.706
    half = 12.706204736174707 * math.sqrt(0.0002) / math.sqrt(2)
    assert difference["n"] == 2
    assert (difference["low"], difference["high"]) == pytest.approx((0.04 - half, 0.04 + half))
    assert not difference["resolved"]
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 3 * 5 and set(results.columns) == {"arm", "seed", "metric", "value"}
    assert "warm seed 2: failed: MemoryError: out of memory" in report
    assert "NOT set by the arm" in report  # warm's steps differ and no override asked for it
    assert (
        "- **warm**: no difference survives the correction. The same nonzero difference at "
        "every seed, with nothing to judge its noise by: retrieval_top5 +0.002. Within noise on "
        "2 of 3 metrics." in report
    )
    # 3 comparisons under Holm: retrieval_top1's p (t = 4 with 1 df: 1 - 2 atan(4) / pi) times
    # 3; the two comparisons without spread count with p = 1.
    p_value = 1 - 2 * math.atan(4) / math.pi
    assert difference["p_value"] == pytest.approx(p_value)
    assert difference["p_adjusted"] == pytest.approx(3 * p_value)
    assert "3 comparisons (1 arm x 3 metrics) under Holm's family-wise correction" in report
    assert "The intervals cover the seeds only" in report  # these cells kept no items
    assert "| retrieval_top5 | +0.002 (same at every seed) |" in report
    assert (tmp_path / "figures" / "metrics.png").exists()
    assert (tmp_path / "figures" / "differences.png").exists()


def test_arm_intervals_end_at_the_metrics_range(tmp_path):
    """An AUROC or a retrieval accuracy cannot exceed 1: an arm's interval that the t quantile
    carries past it is cut there (its mean and the differences are untouched)."""
    spec = load_study(SMOKE, ["seeds=(0, 1, 2)"])
    runner.record_study(spec, tmp_path, {"config": SMOKE, "set": []})
    top1 = [0.99, 0.999, 0.95]  # mean 0.9797, t interval [0.914, 1.045]
    for arm, shift in (("ntxent", 0.0), ("warm", -0.01)):
        for seed in range(3):
            values = {"retrieval_top1": top1[seed] + shift, "age_r2@all": -3.0 + seed}
            _write_result(tmp_path, arm, seed, values)
    write_report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["kind", "arm", "metric"])
    row = summary.loc[("arm", "ntxent", "retrieval_top1")]
    expected = statistics.t_interval(top1)
    assert expected.high > 1
    assert (row["low"], row["high"]) == pytest.approx((expected.low, 1.0))
    assert row["seed_high"] == 1.0 and row["mean"] == pytest.approx(np.mean(top1))
    r2 = summary.loc[("arm", "ntxent", "age_r2@all")]  # R^2 has no lower bound
    assert r2["low"] == pytest.approx(statistics.t_interval([-3.0, -2.0, -1.0]).low)
    difference = summary.loc[("difference", "warm", "retrieval_top1")]
    assert difference["mean"] == pytest.approx(-0.01)


def test_report_names_the_formulations_the_cells_ran():
    """One line when every cell recorded the same formulations, the counts when they differ,
    nothing when no cell recorded them (cells from before they were recorded)."""
    dft = {"conv_impl_training": "dft", "conv_impl_inference": "dft", "norm_impl": "fused"}
    s2d = {**dft, "conv_impl_training": "space_to_depth", "conv_impl_inference": "xla"}
    cells = [{"machine": {"formulations": f}} for f in (dft, dft, s2d)] + [{"machine": {}}]
    assert formulation_lines(cells[3:]) == []
    assert formulation_lines(cells[:2]) == [
        "- Formulations (every cell): conv_impl_inference dft, conv_impl_training dft, "
        "norm_impl fused."
    ]
    assert formulation_lines(cells) == [
        "- Formulations DIFFER between cells (float rounding only, but not one program): "
        "conv_impl_inference dft, conv_impl_training dft, norm_impl fused: 2 cells; "
        "conv_impl_inference xla, conv_impl_training space_to_depth, norm_impl fused: 1 cells; "
        "not recorded: 1 cells."
    ]


def _write_items_cell(study_dir, spec, arm, seed, hits, y, scores, patients, config=None):
    """A finished cell with its per-test-item results: retrieval hits per query, binary probe
    scores; its metrics computed from them independently (mean, sklearn's AUROC)."""
    from sklearn.metrics import roc_auc_score

    from pclr_jax.study.items import probe_arrays, write_items

    metrics = {"retrieval_top1": float(np.mean(hits)), "sex_auroc@all": roc_auc_score(y, scores)}
    _write_result(study_dir, arm, seed, metrics)
    directory = cell.cell_directory(study_dir, arm, seed)
    rows = np.arange(len(hits))
    arrays = {"retrieval_top1.rows": rows, "retrieval_top1.hits": hits}
    arrays.update(probe_arrays("sex_auroc@all", "binary", rows, y, [scores]))
    write_items(directory, patients, arrays)
    config = config or json.loads(spec.cell_config(arm, seed).to_json_best_effort())
    cell.write_json_atomically(directory / cell.CONFIG, config)


def test_report_with_items_covers_the_test_set_and_publishes(tmp_path):
    """Cells with per-test-item results: the interval of a difference that is the same at every
    seed comes from the test patients alone (a known standard deviation), the cells' configs are
    compared field by field, and a published folder reports the same from its own files."""
    spec = load_study(SMOKE, ["seeds=(0, 1, 2)"])
    study = tmp_path / "study"
    runner.record_study(spec, study, {"config": SMOKE, "set": ["seeds=(0, 1, 2)"]})
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(100), 2)  # 100 test patients, 2 ECGs (queries) each
    gain = rng.normal(0.05, 0.2, 100)[patients]  # warm's per-patient gain, the same every seed
    y = np.tile([0, 1], 100)
    for seed in range(3):
        hits = rng.uniform(0.2, 0.6, 200)
        scores = y + rng.normal(size=200)
        _write_items_cell(study, spec, "ntxent", seed, hits, y, scores, patients)
        config = json.loads(spec.cell_config("warm", seed).to_json_best_effort())
        if seed == 2:
            config["optimizer"]["learning_rate"] = 0.5  # a slip no override asked for
        _write_items_cell(
            study, spec, "warm", seed, hits + gain, y, scores + 0.1 * y, patients, config
        )
    report = write_report(study, n_bootstrap=2000).read_text()
    summary = pd.read_csv(study / "summary.csv")
    difference = summary[(summary.kind == "difference") & (summary.metric == "retrieval_top1")]
    difference = difference.iloc[0]
    # The same difference at every seed (sd 0): the interval is the test set's alone, whose sd
    # is that of a mean over 100 patients of their gain (the bootstrap's (n - 1) / n included).
    per_patient = gain[::2]
    expected_sd = per_patient.std(ddof=0) / np.sqrt(100)
    assert difference["interval"] == "seeds and test set"
    assert difference["sd"] == pytest.approx(0, abs=1e-12)
    assert difference["test_sd"] == pytest.approx(expected_sd, rel=0.08)
    assert difference["high"] - difference["mean"] == pytest.approx(
        1.959964 * difference["test_sd"], rel=1e-6
    )
    assert difference["mean"] == pytest.approx(per_patient.mean())
    assert (
        "**warm**'s cells differ from each other in: optimizer.learning_rate (0.001 -> 0.5)"
        in report
    )
    assert "| warm | pclr_synthetic/tiny:train |" in report and "between seeds" in report
    assert "The intervals cover the seeds and the test set" in report

    published = tmp_path / "published"
    write_report(study, n_bootstrap=2000, publish=published)
    for name in ("config.json", "result.json", "items.npz"):
        assert (cell.cell_directory(published, "warm", 2) / name).exists()
    assert not (cell.cell_directory(published, "warm", 2) / "train").exists()
    assert "<!-- study-summary:published -->" in (published / "summary.md").read_text()
    again = pd.read_csv(published / "summary.csv")
    write_report(published, n_bootstrap=2000)  # the published folder reports on its own
    pd.testing.assert_frame_equal(pd.read_csv(published / "summary.csv"), again)


def test_report_and_plan_of_a_folder_with_results_only(tmp_path, capsys):
    """A study published before its cells were kept: seed-only statistics, said in its words;
    ``pclr study plan`` reads it as a pilot."""
    from pclr_jax.commands.cli import main

    source = REPO / "docs" / "studies" / "loss_variants_ptbxl_reduced" / "results.csv"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.csv").write_text(source.read_text())
    with pytest.raises(ValueError, match="name the reference arm"):
        write_report(tmp_path / "old")
    assert main(["study", "report", str(tmp_path / "old"), "--reference", "ntxent"]) == 0
    text = capsys.readouterr().out
    assert "The intervals cover the seeds only" in text
    assert "51 comparisons (3 arms x 17 metrics)" in text
    assert main(["study", "plan", "--from", str(tmp_path / "old"), "--detect", "0.03"]) == 0
    plan = capsys.readouterr().out
    assert "alpha 0.00098 (0.05 / 51 comparisons, Holm's family-wise correction)" in plan
    assert "| retrieval_top1 |" in plan and "optimistic" in plan
    # For a planned study with a pre-registered primary family: its 3 comparisons, its seeds.
    full = str(REPO / "configs" / "studies" / "loss_variants_full.py")
    arguments = ["study", "plan", "--from", str(tmp_path / "old"), "--detect", "0.03"]
    assert main([*arguments, "--config", full, "--set", "seeds=(0, 1, 2, 3, 4)"]) == 0
    plan = capsys.readouterr().out
    assert "(pre-registered: retrieval_top1 x 3 arms)" in plan
    assert "alpha 0.0167 (0.05 / 3 comparisons" in plan and "0.05 / 39 comparisons" in plan
    assert "detectable at 5 seeds" in plan
    assert "| sex_auroc@100 |" in plan and "superclass" not in plan  # the planned study's metrics


# ----------------------------------------------------------------------------- end to end


def assert_items_match_results(study_dir) -> None:
    """Every cell wrote its resolved config and per-test-item results, and each metric
    recomputed from the items on the whole test set is the one the cell recorded."""
    from pclr_jax.study.items import read_items

    directories = sorted((pathlib.Path(study_dir) / "cells").glob("*/seed_*"))
    assert directories
    for directory in directories:
        assert json.loads((directory / cell.CONFIG).read_text())["seed"] == int(
            directory.name.split("_")[1]
        )
        items = read_items(directory)
        recorded = cell.read_result(directory)["metrics"]
        assert set(items.metrics) == set(recorded)
        for name, metric in items.metrics.items():
            value = metric.value(np.ones((1, len(metric.rows))))[0]
            assert value == pytest.approx(recorded[name], rel=1e-5, abs=1e-6), name
    assert "seeds and test set" in (pathlib.Path(study_dir) / "summary.csv").read_text()


def study_command(workdir, data_dir, *extra):
    return [
        sys.executable,
        "-m",
        "pclr_jax.commands.cli",
        "study",
        "run",
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        f"--set=base.data.data_dir={str(data_dir)!r}",
        "--set=base.total_steps=24",
        "--set=base.checkpoint.every_steps=8",  # each save costs ~0.5 s; the kill needs one
        f"--compilation-cache={pathlib.Path(workdir).parent / 'xla_cache'}",
        *extra,
    ]


def run_study(workdir, data_dir, *extra):
    result = subprocess.run(
        study_command(workdir, data_dir, *extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,  # minutes on an idle machine; a generous bound for a loaded one
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """``pclr_synthetic/tiny`` prepared once for the module."""
    directory = tmp_path_factory.mktemp("tfds")
    from pclr_jax.data.builders import BUILDERS

    BUILDERS["pclr_synthetic"](config="tiny", data_dir=str(directory)).download_and_prepare()
    return directory


def _kill_during_second_cell(workdir, data_dir, *extra) -> None:
    """Starts the study and SIGKILLs it once its second cell (warm, seed 0) has a checkpoint."""
    process = subprocess.Popen(
        study_command(workdir, data_dir, *extra),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    second = cell.cell_directory(workdir, "warm", 0)
    deadline = time.monotonic() + 1800
    try:
        while cell.latest_checkpoint_step(second / "train") == 0:
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the second cell never checkpointed"
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_study_killed_resumed_and_run_cell_by_cell(tmp_path, data_dir):
    """One uninterrupted sequential study against the same study run as separate jobs (seed 0,
    killed in its second cell and resubmitted; then seed 1): the same results, cell for cell."""
    sequential = tmp_path / "sequential"
    run_study(sequential, data_dir)
    for name in ("report.md", "results.csv", "summary.csv", "summary.md", "figures/metrics.png"):
        assert (sequential / name).exists(), name
    assert_items_match_results(sequential)

    by_cell = tmp_path / "by_cell"
    _kill_during_second_cell(by_cell, data_dir, "--seed=0")
    first = cell.cell_directory(by_cell, "ntxent", 0) / cell.RESULT
    first_text, first_mtime = first.read_text(), first.stat().st_mtime_ns
    assert not (cell.cell_directory(by_cell, "warm", 0) / cell.RESULT).exists()
    log = run_study(by_cell, data_dir, "--seed=0", "--no-report").stderr
    assert "ntxent seed 0: finished earlier, skipped" in log
    assert first.read_text() == first_text and first.stat().st_mtime_ns == first_mtime
    resumed = json.loads((cell.cell_directory(by_cell, "warm", 0) / cell.RESULT).read_text())
    assert resumed["resumed_from_step"] > 0
    spec = load_study(SMOKE)
    formulations = cell.resolved_formulations(spec.cell_config("warm", 0).model)
    assert resumed["machine"]["formulations"] == formulations
    assert resumed["budget"]["steps"] == 24
    run_study(by_cell, data_dir, "--seed=1", "--no-report")
    write_report(by_cell)

    a = pd.read_csv(sequential / "results.csv")
    b = pd.read_csv(by_cell / "results.csv")
    assert list(a[["arm", "seed", "metric"]].itertuples(index=False)) == list(
        b[["arm", "seed", "metric"]].itertuples(index=False)
    )
    # The killed-and-resumed cell trained exactly like the uninterrupted one.
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-9)
    # 2 arms and the untrained baseline, at 2 seeds
    assert len(a) == 6 * a["metric"].nunique() and a["metric"].str.startswith("retrieval").any()
    baseline = cell.read_result(cell.cell_directory(sequential, cell.BASELINE_ARM, 1))
    assert baseline["budget"]["steps"] == 0 and baseline["train_wall_s"] == 0
    summary = pd.read_csv(sequential / "summary.csv")
    assert set(summary.loc[summary["arm"] == cell.BASELINE_ARM, "kind"]) == {"arm"}
    report = (sequential / "report.md").read_text()
    assert "| metric | ntxent | warm | random_init |" in report
    assert "untrained baseline (`random_init`) at 2 of 2 seeds" in report
    assert "For scale, the untrained encoder" in (sequential / "summary.md").read_text()
