"""``pclr bench``: the CLI at tiny sizes, FLOP counter, peer runner and the peers' models."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pclr_jax.benchmarking import runner
from pclr_jax.benchmarking.flops import (
    conv_macs,
    cost_flops,
    forward_flops_per_ecg,
    jit_flops,
    train_flops_per_ecg,
)
from pclr_jax.benchmarking.workloads import arch_spec, encoder_config, lower_train_step
from pclr_jax.commands import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "pclr_jax/benchmarking/protocol.py"


@pytest.mark.parametrize("workload", ["train", "embed", "loss", "loader"])
def test_bench_cli_writes_json(workload, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", workload, "--config=tiny", "--batch-pairs=8", "--steps=2", "--warmup=1"]
    assert cli.main([*argv, "--peak-size=128", f"--json={out}"]) == 0
    printed = capsys.readouterr().out
    assert "| pclr_jax |" in printed
    # The FLOPs line names where the count comes from (docs/benchmarks.md).
    if workload in ("train", "embed"):
        assert "model FLOPs (from the config): " in printed and "XLA cost analysis" not in printed
    if workload == "loss":
        assert "XLA cost analysis: " in printed
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert {"cpu_model", "cores", "jax", "date_utc", "load_average_1min"} <= set(machine)
    assert machine["platform"] == "cpu" and machine["device_count"] >= 1  # from the peak child
    (row,) = result["rows"]
    assert row["device_peak_mib"] is None  # CPU devices report no memory statistics
    assert row["contender"] == "pclr_jax" and row["speedup"] == 1.0
    for key in ("ecg_per_s", "median_step_s", "maxrss_mib"):
        assert row[key] > 0, key
    assert row["compile_s"] > -1  # first call minus a median step: noisy at tiny sizes
    assert row["ecgs_per_step"] == 16
    assert len(result["contenders"]["pclr_jax"]["times"]) == 2
    if workload == "loader":
        assert row["gflop_per_s"] is None and result["matmul_peak_gflop_per_s"] == {}
    else:
        assert result["flops_per_ecg"] > 0 and row["gflop_per_s"] > 0
        assert 0 < row["peak_fraction"] and result["matmul_peak_gflop_per_s"]["fp32"] > 0
    if workload == "train":
        assert row["n_params"] == 27_808  # the tiny preset with its 16-16 head
    if workload != "loader":
        assert row["device"] == "cpu"
        assert 0 < result["contenders"]["pclr_jax"]["planned_gib"] < 1  # XLA's memory plan


def test_step_flops_count_every_device_of_a_shard_map_step():
    """A contrastive step as the training step is built (projection, NT-Xent with negatives
    gathered from every device, gradients averaged with ``pmean``) under ``jax.shard_map``: XLA's
    cost analysis of the 8-device program counts one device's work, ``step_flops`` the whole
    step, which equals the 1-device count (the work is split, not repeated). Without the
    multiplication it would be 1/8."""
    from jax.sharding import PartitionSpec as P

    from pclr_jax.benchmarking.flops import program_devices, step_flops
    from pclr_jax.losses import get_loss
    from pclr_jax.runtime.distributed import make_mesh

    loss = get_loss("ntxent", axis_name="data", temperature=0.1)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)
    x_a, x_b = (jnp.asarray(rng.normal(size=(64, 64)), jnp.float32) for _ in range(2))
    ids = jnp.arange(64, dtype=jnp.int32)

    def per_device(w, x_a, x_b, ids):
        def objective(w):
            return jax.lax.pmean(loss(x_a @ w, x_b @ w, ids, {})[0], "data")

        value, grad = jax.value_and_grad(objective)(w)
        return value, jax.lax.pmean(grad, "data")

    def compiled(devices):
        step = jax.shard_map(
            per_device,
            mesh=make_mesh(devices),
            in_specs=(P(), P("data"), P("data"), P("data")),
            out_specs=(P(), P()),
        )
        return jax.jit(step).lower(w, x_a, x_b, ids).compile()

    one, eight = compiled(jax.devices()[:1]), compiled(jax.devices()[:8])
    assert (program_devices(one), program_devices(eight)) == (1, 8)
    assert cost_flops(eight) == pytest.approx(cost_flops(one) / 8, rel=0.05)
    assert step_flops(eight) == pytest.approx(step_flops(one), rel=0.05)


def _bench_exit(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(["bench", *argv, "--config=tiny", "--steps=1", "--warmup=0", "--peak-size=0"])
    return code, capsys.readouterr().err


def test_bench_loss_beyond_memory_is_refused_naming_chunk_size(capsys):
    """4,096 pairs dense: XLA plans 0.81 GiB ((4,096 x 8,192) float32 similarity blocks),
    refused under a 0.1 GiB limit before anything is allocated; chunked by 256 it plans 0.04 GiB
    and runs."""
    code, err = _bench_exit(["loss", "--batch-pairs=4096", "--memory-limit-gib=0.1"], capsys)
    assert code == 2
    assert "GiB per device" in err and "--chunk-size" in err and "not run" in err
    code, err = _bench_exit(
        ["loss", "--batch-pairs=4096", "--memory-limit-gib=0.1", "--chunk-size=256"], capsys
    )
    assert code == 0, err


def test_bench_train_beyond_memory_points_to_gradient_caching(capsys):
    code, err = _bench_exit(["train", "--batch-pairs=8", "--memory-limit-gib=0.001"], capsys)
    assert code == 2
    assert "grad_cache_microbatch" in err and "--grad-cache-microbatch" in err


def _conv(x, kernel, stride, padding):
    return lax.conv_general_dilated(
        x, kernel, (stride,), padding, dimension_numbers=("NWC", "WIO", "NWC")
    )


def test_flops_match_hand_count_of_a_tiny_conv_net():
    x = jnp.ones((2, 32, 3))
    k1, k2, w = jnp.ones((5, 3, 4)), jnp.ones((3, 4, 6)), jnp.ones((13 * 6, 7))

    def net(x, k1, k2, w):
        y = _conv(_conv(x, k1, 1, "VALID"), k2, 2, "VALID")  # (2, 28, 4) -> (2, 13, 6)
        return y.reshape(2, -1) @ w

    # a multiply-add is 2 FLOPs: batch x outputs x out-channels x taps x in-channels
    hand = 2 * (2 * 28 * 4 * 5 * 3) + 2 * (2 * 13 * 6 * 3 * 4) + 2 * (2 * 78 * 7)
    assert jit_flops(net, x, k1, k2, w) == hand
    # 'SAME' padding: XLA does not count the taps that fall on padding (2 + 1 at each end)
    same = 2 * (2 * 4 * 3) * (32 * 5 - 2 * (2 + 1))
    assert jit_flops(lambda x, k: _conv(x, k, 1, "SAME"), x, k1) == same
    assert 2 * 2 * conv_macs(32, 5, 1, 3, 4) == same  # the analytic count, per ECG
    assert 2 * 2 * conv_macs(32, 16, 4, 3, 4) == jit_flops(
        lambda x, k: _conv(x, k, 4, "SAME"), x, jnp.ones((16, 3, 4))
    )


@pytest.mark.usefixtures("xla_auto")
def test_full_model_size_and_flops():
    """The released architecture with its head: 6,600,352 parameters, ~3.65 GFLOP forward."""
    from pclr_jax.model.encoder import PCLRModel, count_parameters

    config = encoder_config("full")
    assert arch_spec(config)["downsample"] == [4, 4, 4, 4]
    model = PCLRModel(config)
    x = jax.ShapeDtypeStruct((1, 4096, 12), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    assert count_parameters(variables) == 6_600_352
    forward = jit_flops(lambda v, x: model.apply(v, x)[1], variables, x)
    assert 3.6e9 < forward < 3.7e9
    assert forward_flops_per_ecg(config) == pytest.approx(forward, rel=0.01)


@pytest.mark.usefixtures("xla_auto")
def test_analytic_flops_match_xla_cost_analysis_on_cpu():
    """The released model's training step: the count from its configuration (convolutions and
    dense layers, what pclr bench and the accelerator check report) is within 1% of XLA's CPU
    count of the real step (lowered, 4 pairs = 8 ECGs; XLA adds the element-wise work)."""
    config = encoder_config("full")
    lowered, *_ = lower_train_step(config, 4, jax.devices()[:1])
    xla = cost_flops(lowered) / 8
    assert train_flops_per_ecg(config) == pytest.approx(xla, rel=0.01)
    assert 10.7e9 < train_flops_per_ecg(config) < 10.9e9


FAKE_PEER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("protocol", {protocol!r})
protocol = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protocol)
if {missing}:
    print("fake peer: cannot import 'fakeframework'; pip install fakeframework", file=sys.stderr)
    sys.exit(3)
import argparse
parser = argparse.ArgumentParser()
protocol.add_workload_args(parser)
args = parser.parse_args()
device = {device!r} or args.device or "cpu"
if {wrong_device}:
    protocol.refuse(protocol.DEVICE_EXIT_CODE, "fake peer: cannot run on " + args.device)
info = {{"n_params": {params}, "ecgs_per_step": 4, "device": device}}
def step():  # one line per step, timed or not, in its log
    with open(__file__ + ".steps", "a") as log:
        log.write("step\\n")
protocol.run_contender(args, lambda: (step, info))
"""


def _fake(
    tmp_path, name, params=10, missing=False, device=None, wrong_device=False
) -> runner.Contender:
    """A peer that does nothing; it reports ``device``, or the ``--device`` it was given."""
    script = tmp_path / f"{name}.py"
    body = FAKE_PEER.format(
        protocol=str(PROTOCOL),
        missing=missing,
        params=params,
        device=device,
        wrong_device=wrong_device,
    )
    script.write_text(textwrap.dedent(body))
    args = ["--workload=train", "--arch={}", "--batch-pairs=2", "--warmup=1", "--steps=3"]
    peer = runner.Peer(script.name, "", "json", "pip install fakeframework")
    return runner.Contender(name, [sys.executable, str(script), *args], dict(os.environ), peer)


def test_runner_interleaves_and_checks_parameter_counts(tmp_path):
    results = runner.run_contenders(
        [_fake(tmp_path, "a"), _fake(tmp_path, "b")], steps=3, log=lambda _: None
    )
    assert [len(r["times"]) for r in results.values()] == [3, 3]
    assert all(r["maxrss_mib"] > 0 for r in results.values())
    sequential = runner.run_contenders(
        [_fake(tmp_path, "a"), _fake(tmp_path, "b")], 3, sequential=True, log=lambda _: None
    )
    assert len(sequential["b"]["times"]) == 3
    with pytest.raises(runner.ModelMismatch, match="refusing to compare different models"):
        runner.run_contenders(
            [_fake(tmp_path, "a"), _fake(tmp_path, "b", params=11)], 3, log=lambda _: None
        )


def _steps_run(tmp_path, name) -> int:
    return len((tmp_path / f"{name}.py.steps").read_text().splitlines())


@pytest.mark.parametrize("rewarm", [0, 1, 2])
def test_interleaved_turns_start_with_rewarm_untimed_steps(tmp_path, rewarm):
    """Each contender's turn in a round runs ``rewarm`` untimed steps before its timed one: the
    first call, 1 warm-up, and per round of 3 ``rewarm`` + 1 steps, of which 3 are timed."""
    results = runner.run_contenders(
        [_fake(tmp_path, "a"), _fake(tmp_path, "b")], 3, log=lambda _: None, rewarm=rewarm
    )
    for name in ("a", "b"):
        assert len(results[name]["times"]) == 3
        assert _steps_run(tmp_path, name) == 1 + 1 + 3 * (rewarm + 1)


@pytest.mark.parametrize("sequential", [False, True])
def test_runner_never_compares_different_devices(tmp_path, sequential):
    """Peers are started on the reference's device; one that cannot run there, or reports
    another device, stops the run."""
    run = lambda *c: runner.run_contenders(list(c), 2, sequential, log=lambda _: None)  # noqa: E731
    reference = _fake(tmp_path, "a", device="gpu")
    assert run(reference, _fake(tmp_path, "b"))["b"]["device"] == "gpu"  # told --device=gpu
    with pytest.raises(runner.DeviceMismatch, match="cannot run on gpu"):
        run(reference, _fake(tmp_path, "b", wrong_device=True))
    with pytest.raises(runner.DeviceMismatch, match="refusing to compare different devices"):
        run(reference, _fake(tmp_path, "b", device="cpu"))


def test_runner_names_the_missing_framework(tmp_path):
    contender = _fake(tmp_path, "a")
    missing = runner.Peer("x.py", "", "fakeframework_not_installed", "pip install fakeframework")
    contender.peer = missing
    with pytest.raises(runner.PeerUnavailable, match="fakeframework_not_installed.*pip install"):
        runner.check_importable(contender)
    # a peer script that finds its framework missing at run time (exit code 3)
    with pytest.raises(runner.PeerUnavailable, match="cannot import 'fakeframework'"):
        runner.run_contenders([_fake(tmp_path, "b", missing=True)], 1, log=lambda _: None)


def test_cli_without_torch_says_how_to_install(capsys):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here")
    code = cli.main(["bench", "train", "--config=tiny", "--vs=torch", "--peak-size=0"])
    assert code == 2
    message = capsys.readouterr().err
    assert "'torch'" in message and "pip install torch" in message and "--peer-python" in message


def _reference_npz(path: pathlib.Path) -> dict:
    """pclr-jax weights (perturbed batch-norm statistics), an input and the outputs."""
    from flax.traverse_util import flatten_dict

    from pclr_jax.model.encoder import PCLRModel, init_variables

    config = encoder_config("tiny", 256)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda x: np.asarray(x) + rng.normal(0, 0.1, x.shape).astype(np.float32),
        init_variables(config, jax.random.key(0)),
    )
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda p, x: np.abs(x) + 0.5 if p[-1].key == "var" else x, variables["batch_stats"]
    )
    x = rng.normal(0, 0.5, (3, config.n_samples, config.n_leads)).astype(np.float32)
    embed, projection = PCLRModel(config).apply(variables, x)
    flat = {"/".join(k): np.asarray(v) for k, v in flatten_dict(variables).items()}
    np.savez(path, input=x, embed=np.asarray(embed), projection=np.asarray(projection), **flat)
    return arch_spec(config)


@pytest.mark.parametrize(
    "script, module, env_var",
    [
        ("torch_pclr.py", "torch", "PCLR_PEER_PYTHON_TORCH"),
        ("tf_keras_pclr.py", "tensorflow", "PCLR_PEER_PYTHON_TF"),
    ],
)
def test_peer_forward_equals_pclr_jax(script, module, env_var, tmp_path):
    """Same weights, same outputs; runs where the framework is importable, by this interpreter
    or by the one named in ``$PCLR_PEER_PYTHON_TORCH`` / ``$PCLR_PEER_PYTHON_TF``."""
    python = os.environ.get(env_var)
    if not python:
        pytest.importorskip(module)
        python = sys.executable
    npz = tmp_path / "reference.npz"
    arch = _reference_npz(npz)
    command = [python, str(REPO / "benchmarks/peers" / script), "--workload=train"]
    command += [f"--arch={json.dumps(arch)}", "--batch-pairs=1", f"--check={npz}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    check = json.loads(out.stdout.strip().splitlines()[-1])
    assert check["embed_max_abs_diff"] < 1e-4 * check["max_abs_output"]
    assert check["projection_max_abs_diff"] < 1e-4 * check["max_abs_output"]
