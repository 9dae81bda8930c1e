"""The training loop end to end on the smoke config: outputs, exact resume after SIGKILL,
SIGTERM, and the non-finite-loss stop.

Runs go through ``train.py`` in subprocesses (8 faked CPU devices, inherited from conftest), the
way a user or a cluster scheduler starts them. They share one JAX compilation cache (``env``):
most runs compile the same smoke programs (init, step, evaluation), which costs far more than
their steps; a later run loads the executables the first one compiled. run.sh keeps a module on
one xdist worker (``--dist loadfile``), so the reference run and the cache are made once.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from restore_worker import flatten

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # minutes: a dozen train.py runs


def train_command(workdir, data_dir, *overrides):
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--config=configs/smoke.py",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *overrides,
    ]


def run_training(workdir, data_dir, *overrides, timeout=300, env=None):
    result = subprocess.run(
        train_command(workdir, data_dir, *overrides),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses_by_step(workdir) -> dict[int, float]:
    records = [
        json.loads(line)
        for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["split"] == "train"]
    steps = [r["step"] for r in train]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in train}


def wait_for_step(workdir, step, process, timeout=240):
    """Polls metrics.jsonl until a train record of ``step`` or later appears."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training finished before it could be interrupted"
        if path.exists():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line]
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.005)
    raise TimeoutError(f"step {step} not reached")


def checkpoint_steps(workdir) -> list[int]:
    directory = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


LONG = (
    "--config.total_steps=60",
    "--config.eval.every_steps=30",
    "--config.checkpoint.every_steps=5",
)
# A short run; two tests use the same one, so that the second loads its programs from the cache.
SHORT = ("--config.total_steps=6", "--config.eval.every_steps=6")


@pytest.fixture(scope="module")
def data_dir(tiny_synthetic_data_dir):
    """``pclr_synthetic/tiny``, prepared once for the session (conftest)."""
    return tiny_synthetic_data_dir


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The runs' environment: this one plus a JAX compilation cache shared by the module's runs."""
    cache = tmp_path_factory.mktemp("xla_cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir, env):
    """An uninterrupted 60-step run."""
    workdir = tmp_path_factory.mktemp("reference")
    result = run_training(workdir, data_dir, *LONG, env=env)
    (workdir / "stderr.txt").write_text(result.stderr)  # not a terminal: plain progress lines
    return workdir


def test_run_writes_every_output(reference_run):
    workdir = reference_run
    losses = losses_by_step(workdir)
    assert sorted(losses) == list(range(1, 61))
    assert all(np.isfinite(list(losses.values())))
    evals = [
        json.loads(line)
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "eval"
    ]
    assert [r["step"] for r in evals] == [30, 60]
    assert all(0.0 <= r["retrieval_top1"] <= 1.0 for r in evals)
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary["metrics"]) == {"pclr", "random_init"}
    for metrics in summary["metrics"].values():
        assert {"retrieval_top1", "chance_top1", "sex_auroc", "age_r2"} <= set(metrics)
    for name in ("curves.png", "encoder.h5", "embeddings_test.parquet"):
        assert (workdir / name).stat().st_size > 0
    assert (workdir / "tensorboard").is_dir()

    # The exports hold the trained weights: the Orbax and Keras copies agree exactly.
    from pclr_jax.weights.encoder_checkpoint import restore_encoder
    from pclr_jax.weights.keras_h5 import read_keras_h5

    config, variables = restore_encoder(workdir / "encoder")
    keras_model = read_keras_h5(workdir / "encoder.h5")
    assert keras_model.config == config
    flat_orbax = dict(flatten(variables))
    flat_keras = dict(flatten(keras_model.variables))
    assert flat_orbax.keys() == flat_keras.keys()
    for key, value in flat_orbax.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_keras[key]), err_msg=key)
    # Retention: the last two periodic checkpoints plus the best evaluated one at most.
    assert checkpoint_steps(workdir)[-1] == 60
    assert len(checkpoint_steps(workdir)) <= 3


def test_log_lines_and_the_exported_encoders_default_layer(reference_run):
    """Not on a terminal, progress is one plain line per ``log_every_steps`` (1 in the smoke
    config), no carriage returns; the exported encoder embeds with the layer the run evaluated."""
    from pclr_jax import load_encoder
    from pclr_jax.model.encoder import PCLRModel

    log = (reference_run / "stderr.txt").read_text()
    assert "\r" not in log
    lines = [line for line in log.splitlines() if line.startswith("train: ")]
    assert [line.split(" | ")[0] for line in lines] == [
        f"train: {step}/60 step ({100 * step / 60:.0f}%)" for step in range(1, 61)
    ]
    assert all(" step/s | " in line and "| loss=" in line for line in lines)

    ecgs = np.random.default_rng(0).normal(size=(3, 256, 12)).astype(np.float32)
    encoders = [load_encoder(reference_run / name) for name in ("encoder", "encoder.h5")]
    assert [e.output for e in encoders] == ["embed", "embed"]
    assert "written by pclr-jax" in encoders[0].describe_output()
    expected = PCLRModel(encoders[0].config).apply(
        encoders[0].variables, ecgs, method=PCLRModel.embed
    )
    for encoder in encoders:
        np.testing.assert_allclose(encoder.embed(ecgs), expected, rtol=1e-5, atol=1e-5)


def kill_after_step(workdir, data_dir, step, *overrides, env=None) -> int:
    """Starts a run, SIGKILLs it once ``step`` is logged; returns the last step logged then."""
    process = subprocess.Popen(
        train_command(workdir, data_dir, *overrides),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        reached = wait_for_step(workdir, step, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return reached


def test_sigkill_then_resume_reproduces_every_loss(tmp_path, data_dir, env, reference_run):
    reached = kill_after_step(tmp_path, data_dir, 17, *LONG, env=env)
    assert reached < 60 and not (tmp_path / "summary.json").exists()
    saved = checkpoint_steps(tmp_path)
    assert saved and saved[-1] < 60

    run_training(tmp_path, data_dir, *LONG, env=env)
    resumed, reference = losses_by_step(tmp_path), losses_by_step(reference_run)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], f"step {step} differs after resume"


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir, env):
    process = subprocess.Popen(
        train_command(tmp_path, data_dir, *LONG),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_step(tmp_path, 7, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    last_logged = max(losses_by_step(tmp_path))
    assert last_logged < 60
    assert checkpoint_steps(tmp_path)[-1] == last_logged  # saved exactly where it stopped
    assert not (tmp_path / "summary.json").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, env):
    run_training(tmp_path, data_dir, *SHORT, env=env)
    assert checkpoint_steps(tmp_path)[-1] == 6
    result = subprocess.run(
        train_command(
            tmp_path,
            data_dir,
            "--config.total_steps=12",
            "--config.optimizer.learning_rate=1e36",
            "--config.optimizer.grad_clip_norm=1e30",
            "--config.checkpoint.every_steps=100",
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "NonFiniteLossError" in result.stderr
    assert "last good checkpoint (step 6)" in result.stderr
    assert checkpoint_steps(tmp_path)[-1] == 6
    # The intact checkpoint still resumes into a normal run (the reference run's length, whose
    # programs are in the cache by now).
    run_training(tmp_path, data_dir, *LONG, env=env)
    assert checkpoint_steps(tmp_path)[-1] == 60


def test_pclr_train_runs_from_another_directory(tmp_path, data_dir, env):
    """``pclr train`` passes absl flags through, and configs import their siblings from any cwd."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pclr_jax.commands.cli",
            "train",
            f"--config={REPO / 'configs' / 'smoke.py'}",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.data_dir={data_dir}",
            *SHORT,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(losses_by_step(tmp_path / "run")) == [1, 2, 3, 4, 5, 6]
    assert "retrieval_top1" in result.stdout


def test_train_metrics_report_the_input_stall(reference_run):
    records = [
        json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["split"] == "train"]
    for record in train:
        assert 0.0 <= record["input_stall_fraction"] <= 1.0
        assert 0.0 <= record["input_wait_s"] <= record["step_time_s"]


def test_device_resident_run_killed_and_resumed_gives_the_host_loaders_losses(
    tmp_path, data_dir, env, reference_run
):
    """The device-resident feed draws the host loader's batches, so an interrupted and resumed
    run in that mode logs exactly the uninterrupted host-loader run's losses."""
    device_resident = (*LONG, "--config.loader.mode=device_resident")
    kill_after_step(tmp_path, data_dir, 12, *device_resident, env=env)
    assert checkpoint_steps(tmp_path)[-1] < 60
    run_training(tmp_path, data_dir, *device_resident, env=env)
    resumed, reference = losses_by_step(tmp_path), losses_by_step(reference_run)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], f"step {step} differs"
