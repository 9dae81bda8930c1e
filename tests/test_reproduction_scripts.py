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
