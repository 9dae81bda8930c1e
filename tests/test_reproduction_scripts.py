"""The reproduction's helper scripts (``scripts/``): PTB-XL statement labels and the report's
arithmetic, checked against hand-computed values."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pandas as pd
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_statements_table_joins_every_statement_whatever_its_likelihood():
    statements = _load("ptbxl_statements")
    index = pd.DataFrame(
        {
            "record_id": [7, 12],
            "scp_codes": ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 35.0, 'LVH': 50.0, 'ABQRS': 0.0}"],
        }
    )
    table = statements.statements_table(index)
    assert table["sample_id"].tolist() == ["7", "12"]
    assert table["all_statements"].tolist() == ["NORM;SR", "ABQRS;IMI;LVH"]


def _results(rows):
    return pd.DataFrame(
        rows, columns=["source", "task", "size", "size_label", "repeat", "metric", "value"]
    ).assign(ci_low=np.nan, ci_high=np.nan, n_train=0, n_test=0)


def test_report_merges_duplicate_fits_and_computes_relative_gains(tmp_path):
    report = _load("repro_report")
    linear = _results(
        [
            ("pclr", "sex", 100, "100", 0, "auroc", 0.80),
            ("pclr", "sex", 100, "100", 1, "auroc", 0.70),
            ("random_init", "sex", 100, "100", 0, "auroc", 0.60),
            ("pclr", "age", 100, "100", 0, "r2", 0.30),
        ]
    )
    # The scratch run refits the PCLR probes on the same rows: they count once.
    scratch = _results(
        [
            ("pclr", "sex", 100, "100", 0, "auroc", 0.80),
            ("scratch", "sex", 100, "100", 0, "auroc", 0.50),
            ("scratch", "sex", 100, "100", 1, "auroc", 0.70),
            ("scratch", "age", 100, "100", 0, "r2", -0.10),
        ]
    )
    for run, frame in (("linear", linear), ("scratch", scratch)):
        (tmp_path / run).mkdir()
        frame.to_csv(tmp_path / run / "results.csv", index=False)
    results = report.load_results(tmp_path)
    assert len(results) == 7
    _, means = report.curve_tables(results)
    table, summary = report.gains(means)
    # sex: PCLR mean 0.75, scratch mean 0.60: +0.150, relative +25.0%.
    assert "| sex | AUROC | 100 | 0.750 | 0.600 | 0.600 | +0.150 | +25.0% |" in table
    # age: scratch R^2 <= 0 has no relative gain and is left out of the average.
    assert "n/a (scratch R^2 <= 0)" in table
    assert summary.startswith("Mean relative gain of PCLR over scratch: +25.0% over 1 (task, size)")
    assert "PCLR ahead in 2 of 2 cells" in summary


def test_report_requires_results(tmp_path):
    report = _load("repro_report")
    with pytest.raises(FileNotFoundError, match="results.csv"):
        report.load_results(tmp_path)


def test_statements_table_puts_random_init_beside_pclr():
    report = _load("repro_report")
    rows = [
        ("pclr", "all_statements", 17417, "all", 0, "auroc", 0.859),
        ("random_init", "all_statements", 17417, "all", 0, "auroc", 0.801),
    ]
    frame = _results(rows).assign(ci_low=[0.85, 0.79], ci_high=[0.87, 0.81])
    table = report.statements_table(frame)
    assert "| PCLR (this run) + linear probe | 0.859 [0.850, 0.870] |  |" in table
    # PCLR minus random init: 0.859 - 0.801
    assert "| random init (this run) + linear probe | 0.801 [0.790, 0.810] | +0.058 |" in table
    assert "| xresnet1d101 (supervised, published) | 0.925 | -0.066 |" in table
    only_pclr = report.statements_table(frame[frame["source"] == "pclr"])
    assert "| random init (this run) + linear probe | not run | |" in only_pclr
    # The reproduction fits the random encoder's statements probe on the same folds.
    script = (SCRIPTS / "reproduce.sh").read_text()
    statements_probe = script[script.index("timed probe_statements") :].split(";;")[0]
    assert "--baseline random_init" in statements_probe
