"""``benchmarks/accelerator_check.sh`` end to end at tiny sizes on the CPU (what an accelerator
machine runs at full size), and its table of published peaks."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from pclr_jax.benchmarking.accelerator_check import published_bf16_tflops

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_published_peaks_match_jax_device_kinds():
    assert published_bf16_tflops("NVIDIA H100 80GB HBM3") == 989
    assert published_bf16_tflops("NVIDIA H100 PCIe") == 756
    assert published_bf16_tflops("NVIDIA H200") == 989
    assert published_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert published_bf16_tflops("TPU v5 lite") == 197
    assert published_bf16_tflops("TPU v5") == 459
    assert published_bf16_tflops("TPU v4") == 275
    assert published_bf16_tflops("cpu") is None


@pytest.mark.slow
def test_accelerator_check_runs_end_to_end_at_tiny_sizes(tmp_path):
    """The whole script (device, tests, largest batch, 4 train benches, embed) at tiny sizes:
    about 2.5 CPU-minutes, dominated by four compilations of the training step (the benches
    reuse them through JAX's compilation cache in the output folder)."""
    env = {**os.environ, "PCLR_CHECK_TINY": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/accelerator_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "accelerator_check.json").read_text())
    assert summary["tiny"] and summary["device"]["platform"] == "cpu"
    assert summary["device"]["peaks"]["bf16"] > 0 and summary["device"]["device_count"] >= 1
    assert summary["tests"]["tests"] >= 1 and summary["tests"]["failed"] == []
    assert {fit["pairs"] for fit in summary["largest_batch"].values()} == {4}  # capped at 4
    train = [(r["dtype"], r["batch"]) for r in summary["rows"] if r["workload"] == "train"]
    assert sorted(train) == [("bf16", 4), ("bf16", 8), ("fp32", 4), ("fp32", 8)]  # ECGs
    for row in summary["rows"]:
        assert row["ecg_per_s"] > 0 and row["of_measured_xla_peak"] > 0
        assert row["of_published_bf16_peak"] is None  # no published peak for a CPU
        assert row["device_peak_gib"] is None and row["host_rss_gib"] > 0
    assert all(step["status"] == "ok" for step in summary["steps"].values())
    text = (tmp_path / "accelerator_check.md").read_text()
    assert "Device: " in text and "| train | bf16 | 8 | pclr_jax |" in text
