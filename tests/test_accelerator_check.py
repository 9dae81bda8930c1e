"""``benchmarks/accelerator_check.sh``: at tiny sizes on the CPU end to end (what an accelerator
machine runs at full size), killed mid-run, under a budget; the platform and device count the
test suite runs on; the largest-batch search, inputs made on the device, compile counting, the
convolution-formulation choice and the published peaks."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.benchmarking import accelerator_check
from pclr_jax.benchmarking.compiles import CompileCounter
from pclr_jax.benchmarking.conv_choice import choose, suggest_entry
from pclr_jax.benchmarking.fit import largest_train_batch
from pclr_jax.benchmarking.memory import GIB
from pclr_jax.benchmarking.peaks import published_bf16_tflops
from pclr_jax.benchmarking.workloads import random_program

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/accelerator_check.sh"


@pytest.mark.device_check
def test_the_suite_runs_on_the_platform_it_was_asked_for(record_property):
    """What the accelerator check reads back from the junit XML (``ran_on``): a device run
    that silently fell back to the CPU fails here."""
    asked = os.environ.get("PCLR_TEST_PLATFORM", "cpu")
    record_property("jax_platform", jax.default_backend())
    record_property("device_count", jax.device_count())
    record_property("device_kind", jax.devices()[0].device_kind)
    assert jax.default_backend() == {"cuda": "gpu", "rocm": "gpu"}.get(asked, asked)
    if asked != "cpu":  # float32 tolerances: full float32 products off the CPU
        assert jax.config.jax_default_matmul_precision == "highest"


def _pytest(env_changes: dict, *args: str, tmp_path: pathlib.Path) -> dict:
    """A pytest child in the check's environment plus ``env_changes``; its junit XML, read."""
    xml = tmp_path / "junit.xml"
    env = {**accelerator_check.runner.child_env(str(REPO)), **env_changes}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    done = subprocess.run(
        [*command, f"--junitxml={xml}", *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    return accelerator_check.read_junit(xml)


def test_conftest_adds_eight_devices_to_existing_xla_flags(tmp_path):
    """An XLA_FLAGS set by the environment gets the 8-device flag appended, not skipped."""
    flags = "--xla_cpu_enable_fast_math=false"
    result = _pytest(
        {"XLA_FLAGS": flags},
        "-m",
        "device_check",
        "tests/test_accelerator_check.py",
        tmp_path=tmp_path,
    )
    assert result["ran_on"] == {"jax_platform": "cpu", "device_count": "8", "device_kind": "cpu"}
    assert result["failures"] == result["errors"] == 0


@pytest.mark.slow
def test_on_one_device_the_named_subset_passes_and_skips_what_needs_more(tmp_path):
    """What a 1-GPU machine runs (``pytest -m device_check`` over the check's files), on one
    CPU device: every test passes but the three that need 8 devices, skipped saying why."""
    result = _pytest(
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
        "-m",
        "device_check",
        *accelerator_check.DEVICE_CHECK_FILES,
        tmp_path=tmp_path,
    )
    assert result["ran_on"]["device_count"] == "1"
    assert result["failures"] == result["errors"] == 0 and result["tests"] == 23
    assert sorted(result["skipped_reasons"]) == [
        "tests.test_losses_sharded::test_sharded_loss_and_gradients_equal_single_device[ntxent-5]",
        "tests.test_losses_sharded::test_sharded_loss_and_gradients_equal_single_device[ntxent-None]",
        "tests.test_train_step::test_step_equals_single_device_reference[8]",
    ]
    assert set(result["skipped_reasons"].values()) == {"needs 8 devices; cpu has 1"}


def test_device_check_marker_lives_in_the_files_the_check_runs():
    marked = {
        f"tests/{path.name}"
        for path in (REPO / "tests").glob("test_*.py")
        if "mark.device_check" in path.read_text()
    }
    assert marked == set(accelerator_check.DEVICE_CHECK_FILES)


def _linear_plan(fixed_gib: float, per_pair_gib: float, calls: list):
    def plan(pairs: int) -> int:
        calls.append(pairs)
        return int((fixed_gib + per_pair_gib * pairs) * GIB)

    return plan


@pytest.mark.parametrize(
    "fixed,per_pair,expected,compiled",
    [
        (0.1, 0.02, 2048, [32, 2048]),  # plan(32) / 32 bounds the slope: 2048 fits, 4096 not
        (0.1, 0.01, 4096, [32, 4096]),
        (5.0, 0.01, 4096, [32, 256, 4096]),  # a large fixed part: the line says 4096
        (0.1, 0.001, 8192, [32, 8192]),  # capped at max_pairs
        (60.0, 0.01, 0, [32]),  # not even 32 pairs fit
    ],
)
def test_largest_batch_reports_every_probe_and_compiles_few(fixed, per_pair, expected, compiled):
    calls, probes = [], []
    fit = largest_train_batch(
        _linear_plan(fixed, per_pair, calls), 60 * GIB, 32, 8192, 0.9, probes.append
    )
    assert fit["pairs"] == expected and calls == compiled == fit["probes"]
    assert [p["pairs"] for p in probes] == calls  # each compilation reported as it happened
    budget = 0.9 * 60
    assert all(p["fits"] == (p["planned_gib"] <= budget) for p in probes)
    if 0 < expected < 8192:
        assert fit["planned_gib"] <= budget < fixed + per_pair * 2 * expected


def test_largest_batch_never_returns_a_batch_that_does_not_fit():
    """A plan that jumps at 4096 pairs: that probe does not fit, the line through it says 2048,
    which is compiled and fits."""
    calls = []

    def plan(pairs: int) -> int:
        calls.append(pairs)
        return int((0.1 + 0.01 * pairs + (20 if pairs >= 4096 else 0)) * GIB)

    fit = largest_train_batch(plan, 60 * GIB, 32, 8192, 0.9)
    assert fit["pairs"] == 2048 and calls == [32, 4096, 2048]


def test_inputs_are_made_on_the_device_from_a_key_alone():
    """The batch generator's only argument is the PRNG key (8 bytes): no host array of the
    batch's size is copied to the devices; the arrays come out sharded as asked."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    abstract = {
        "view": jax.ShapeDtypeStruct((16, 256, 12), jnp.float32, sharding=sharding),
        "patient_id": jax.ShapeDtypeStruct((16,), jnp.int32, sharding=sharding),
    }
    program = random_program(abstract)
    memory = program.lower(jax.random.key(0), 1.0).compile().memory_analysis()
    per_device = (16 * 256 * 12 * 4 + 16 * 4) // 8
    assert memory.argument_size_in_bytes <= 8
    assert per_device <= memory.output_size_in_bytes <= per_device + 64  # + the output tuple
    batch = program(jax.random.key(0), 0.5)
    assert batch["view"].sharding == sharding and batch["view"].dtype == jnp.float32
    np.testing.assert_array_equal(batch["patient_id"], np.arange(16))
    assert 0.45 < float(jnp.std(batch["view"])) < 0.55


def test_compile_counter_counts_compilations_not_calls():
    seven, nine = jnp.ones(7), jnp.ones(9)
    counter = CompileCounter()
    add = jax.jit(lambda x: x * 2.5 + 1.25)
    for _ in range(3):
        add(seven)
    add(nine)  # a new shape: a second compilation
    totals = counter.totals()
    assert totals["compiles"] == 2 and totals["cache_hits"] == 0
    assert totals["programs"] == {"jit(<lambda>)": 2} and totals["compile_s"] > 0


def test_conv_choice_picks_the_faster_formulation_on_given_timings():
    assert choose({"xla": 1.0, "space_to_depth": 0.8, "space_to_depth_grad": 0.9}) == (
        "space_to_depth"
    )
    assert choose({"xla": 1.0, "space_to_depth": 0.98}) == "xla"  # within the 3% margin
    assert choose({"xla": 1.0, "space_to_depth": 1.3}) == "xla"

    def rows(mode, dtype, **seconds):
        return [
            {"mode": mode, "dtype": dtype, "impl": impl, "median_s": s}
            for impl, s in seconds.items()
        ]

    timings = (
        rows("training", "bf16", xla=2.0, space_to_depth=1.6, space_to_depth_grad=1.8, dft=2.2)
        + rows("training", "fp32", xla=4.0, space_to_depth=4.2, space_to_depth_grad=3.9, dft=3.6)
        + rows("inference", "bf16", xla=1.0, space_to_depth=1.2, dft=0.9)
        + rows("inference", "fp32", xla=2.0, space_to_depth=2.1, dft=1.9)
    )
    entry = suggest_entry(timings)
    # training, relative to xla: space_to_depth (0.8 + 1.05) / 2 = 0.925, _grad (0.9 + 0.975) / 2
    # = 0.9375, dft (1.1 + 0.9) / 2 = 1.0; inference: dft (0.9 + 0.95) / 2 = 0.925
    assert entry["relative"]["training"]["space_to_depth"] == pytest.approx(0.925)
    assert entry["relative"]["training"]["dft"] == pytest.approx(1.0)
    assert entry["relative"]["inference"]["dft"] == pytest.approx(0.925)
    assert (entry["training"], entry["inference"]) == ("space_to_depth", "dft")
    assert suggest_entry([])["training"] == "xla"  # nothing measured: the plain formulation


def test_budget_and_a_cpu_only_jax_stop_stages_with_the_reason(tmp_path):
    """A real device stage at tiny size, then a stage whose estimate exceeds what is left of
    the budget: skipped, saying why; at full size a JAX that finds only the CPU stops the rest."""
    stages = (
        accelerator_check.Stage("device", 1, ("device",)),
        accelerator_check.Stage("tests", 10_000),
    )
    check = accelerator_check.Check(
        tmp_path, tiny=True, budget_s=600, allow_cpu=False, stages=stages
    )
    check.run()
    summary = json.loads((tmp_path / "accelerator_check.json").read_text())
    assert summary["complete"] and summary["stages"]["device"]["status"] == "ok"
    assert summary["device"]["platform"] == "cpu" and summary["device"]["peaks"]["fp32"] > 0
    assert summary["stages"]["device"]["compiles"] >= 1
    tests = summary["stages"]["tests"]
    assert tests["status"] == "skipped" and "10000 s" in tests["reason"]
    assert "budget" in tests["reason"]
    check.tiny = False
    assert "no GPU or TPU" in check.reason_to_skip(stages[1])


def test_published_peaks_match_jax_device_kinds():
    assert published_bf16_tflops("NVIDIA H100 80GB HBM3") == 989
    assert published_bf16_tflops("NVIDIA H100 PCIe") == 756
    assert published_bf16_tflops("NVIDIA H200") == 989
    assert published_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert published_bf16_tflops("TPU v5 lite") == 197
    assert published_bf16_tflops("TPU v5") == 459
    assert published_bf16_tflops("TPU v4") == 275
    assert published_bf16_tflops("cpu") is None


def _tiny_env(out: pathlib.Path) -> dict:
    return {**os.environ, "PCLR_CHECK_TINY": "1", "OUT": str(out), "PYTHON": sys.executable}


def test_a_kill_mid_run_leaves_the_stages_done_so_far(tmp_path):
    """SIGKILL of the check's Python process (the script execs it) once a stage has finished:
    the summary on disk is valid JSON holding that stage's results, marked incomplete."""
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env=_tiny_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its stage children share the group: cleaned up below
    )
    path = tmp_path / "accelerator_check.json"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if path.exists() and json.loads(path.read_text())["stages"]["device"]["status"] == "ok":
                break
            time.sleep(0.2)
        command = pathlib.Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"pclr_jax.benchmarking.accelerator_check" in command  # Python, not a shell
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the stage that was running
        except ProcessLookupError:
            pass
    summary = json.loads(path.read_text())
    assert summary["complete"] is False
    assert summary["stages"]["device"]["status"] == "ok"
    assert summary["device"]["platform"] == "cpu" and summary["device"]["peaks"]["bf16"] > 0
    assert summary["stages"]["tests"]["status"] in ("pending", "running")  # just started
    assert summary["stages"]["train_bf16"]["status"] == "pending"
    assert "INCOMPLETE" in (tmp_path / "accelerator_check.md").read_text()


@pytest.mark.slow
def test_accelerator_check_runs_end_to_end_at_tiny_sizes(tmp_path):
    """The whole script at tiny sizes on the CPU: every stage, each training step compiled once
    per batch size and reused for its row, rows with analytic FLOPs, the conv_impl choice."""
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=_tiny_env(tmp_path), timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "accelerator_check.json").read_text())
    stages = summary["stages"]
    assert summary["complete"] and summary["tiny"] and summary["device"]["platform"] == "cpu"
    assert [name for name, s in stages.items() if s["status"] != "ok"] == ["torch_peer"]
    assert stages["torch_peer"]["status"] == "skipped" or "torch" not in sys.modules
    tests = summary["tests"]
    assert tests["ran_on"]["jax_platform"] == "cpu" and tests["ran_on"]["device_count"] == "8"
    assert tests["selection"] == list(accelerator_check.TINY_DEVICE_CHECK_FILES)
    assert tests["tests"] == 3 and tests["failed"] == [] and tests["skipped"] == 0
    for dtype in ("bf16", "fp32"):
        assert summary["largest_batch"][dtype]["pairs"] == 4  # capped at 4 in tiny mode
        assert summary["largest_batch"][dtype]["probes"] == [2, 4]  # two step compilations
        assert [p["pairs"] for p in stages[f"train_{dtype}"]["probes"]] == [2, 4]
    batches = sorted((r["workload"], r["dtype"], r["ecgs"]) for r in summary["rows"])
    assert batches == [
        ("embed", "bf16", 8),
        ("embed", "fp32", 8),
        ("train", "bf16", 4),
        ("train", "bf16", 8),
        ("train", "fp32", 4),
        ("train", "fp32", 8),
    ]
    for row in summary["rows"]:
        assert row["finite"] and row["ecg_per_s"] > 0 and row["of_measured_xla_peak"] > 0
        assert row["gflop_per_s"] == pytest.approx(row["flops_per_ecg"] * row["ecg_per_s"] / 1e9)
        assert row["of_published_bf16_peak"] is None and row["device_peak_gib"] is None
    for name, stage in stages.items():
        if name != "torch_peer":
            assert stage["compiles"] >= 1 and stage["seconds"] > 0, name
    conv = summary["conv_formulations"]
    # 4 formulations in training and 3 in inference (conv_choice.CANDIDATES), per dtype
    assert len(conv["timings"]) == 14 and conv["table"] == ["space_to_depth", "xla"]
    assert conv["choice"]["dtypes"] == ["bf16", "fp32"]
    assert conv["choice"]["training"] in ("xla", "space_to_depth", "space_to_depth_grad", "dft")
    assert conv["choice"]["inference"] in ("xla", "space_to_depth", "dft")
    assert conv["line"] in done.stdout
    text = (tmp_path / "accelerator_check.md").read_text()
    assert "Device: " in text and "| train | bf16 | 8 |" in text and "complete" in text
