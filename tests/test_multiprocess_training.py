"""The whole training job (smoke config, one residual unit) as 2 processes on localhost, 2 faked
CPU devices each, ``jax.distributed`` on 127.0.0.1: it finishes and exports, stops together on a
signal to one process, resumes exactly after all processes are killed, and every process restores
the export.

Runs go through ``train.py`` in subprocesses, the way a cluster launcher starts them. (No shared
compilation cache: jax writes it from process 0 only, so process 1 would still compile while
process 0 raced ahead, past gloo's 30 s wait for a peer to join a new collective.)
"""

import json
import pathlib
import re
import signal
import sys

import numpy as np
import pytest
from multiprocess_jobs import finish_job, kill_job, start_job
from restore_worker import flatten
from test_train_loop import checkpoint_steps, losses_by_step, train_command, wait_for_step

from pclr_jax.weights.encoder_checkpoint import read_metadata

REPO = pathlib.Path(__file__).resolve().parents[1]
RESTORE_WORKER = pathlib.Path(__file__).with_name("restore_worker.py")
STEPS = 12
RUN = (
    f"--config.total_steps={STEPS}",
    f"--config.eval.every_steps={STEPS}",
    "--config.checkpoint.every_steps=3",
    # One residual unit instead of the smoke model's four: what these tests check does not
    # depend on the depth, and every process of every job compiles the model (init, step,
    # evaluation), about half the cost of compiling four units.
    "--config.model.unit_samples=(64,)",
    "--config.model.unit_filters=(16,)",
)
TIMEOUT_S = 600
pytestmark = pytest.mark.slow  # minutes: six two-process jobs


def train_job(workdir, data_dir) -> list[str]:
    """Runs the smoke job to its end as 2 processes; returns their outputs."""
    return finish_job(start_job(train_command(workdir, data_dir, *RUN), REPO), TIMEOUT_S)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_synthetic_data_dir):
    """An uninterrupted two-process run of ``STEPS`` steps, and its processes' outputs."""
    workdir = tmp_path_factory.mktemp("reference_2p")
    outputs = train_job(workdir, tiny_synthetic_data_dir)
    return workdir, outputs


def test_two_processes_finish_and_export_once(reference_run):
    workdir, outputs = reference_run
    assert sorted(losses_by_step(workdir)) == list(range(1, STEPS + 1))
    assert json.loads((workdir / "summary.json").read_text())["step"] == STEPS
    assert (workdir / "encoder.h5").stat().st_size > 0
    assert read_metadata(workdir / "encoder")["step"] == STEPS
    # Process 0 alone reports and writes TensorBoard events.
    assert "retrieval_top1" in outputs[0] and "retrieval_top1" not in outputs[1]
    assert len(list((workdir / "tensorboard").iterdir())) == 1


def test_every_process_restores_the_exported_encoder(reference_run, tmp_path):
    workdir, _ = reference_run
    command = [sys.executable, str(RESTORE_WORKER), str(workdir), str(tmp_path)]
    finish_job(start_job(command, REPO), TIMEOUT_S)

    from pclr_jax.weights.keras_h5 import read_keras_h5

    expected = dict(flatten(read_keras_h5(workdir / "encoder.h5").variables))
    for process in (0, 1):
        restored = np.load(tmp_path / f"process_{process}.npz")
        assert sorted(restored.files) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(restored[key], np.asarray(value), err_msg=key)


def _stop_steps(output: str) -> list[int]:
    return [int(s) for s in re.findall(r"received: saving step (\d+) and stopping", output)]


def test_sigterm_to_one_process_stops_both_and_sigkill_of_all_resumes_exactly(
    tmp_path, tiny_synthetic_data_dir, reference_run
):
    """One workdir through three jobs: SIGTERM to process 1 stops both processes at one step
    (agreed inside the training step, read at the next metrics fetch) with a checkpoint; the
    resumed job is SIGKILLed (all processes) after a periodic checkpoint; the restarted job
    finishes. Every logged loss equals the uninterrupted run's."""
    command = train_command(tmp_path, tiny_synthetic_data_dir, *RUN)
    procs = start_job(command, REPO)
    try:
        wait_for_step(tmp_path, 2, procs[0], timeout=TIMEOUT_S)
        procs[1].send_signal(signal.SIGTERM)
        outputs = finish_job(procs, TIMEOUT_S)
    finally:
        kill_job(procs)
    stops = [_stop_steps(output) for output in outputs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], outputs[0][-3000:]
    stopped_at = stops[0][0]
    assert stopped_at < STEPS - 3  # well before the end
    assert "SIGTERM" in outputs[0]  # process 0 learns which signal stopped the job
    assert checkpoint_steps(tmp_path)[-1] == stopped_at == max(losses_by_step(tmp_path))
    # Each process's loader position is in the checkpoint: the next batch after the stop.
    loader_dir = tmp_path / "checkpoints" / str(stopped_at) / "loader"
    for process in (0, 1):
        position = json.loads((loader_dir / f"process_{process}-of-2.json").read_text())
        assert position == {"next_index": stopped_at}
    assert not (tmp_path / "summary.json").exists()

    procs = start_job(command, REPO)
    try:
        reached = wait_for_step(tmp_path, stopped_at + 4, procs[0], timeout=TIMEOUT_S)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
    finally:
        kill_job(procs)
    assert reached < STEPS and not (tmp_path / "summary.json").exists()
    assert stopped_at < checkpoint_steps(tmp_path)[-1] < STEPS

    train_job(tmp_path, tiny_synthetic_data_dir)
    resumed, reference = losses_by_step(tmp_path), losses_by_step(reference_run[0])
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], f"step {step} differs after resume"
    assert read_metadata(tmp_path / "encoder")["step"] == STEPS


def test_unshared_workdir_or_data_dir_stops_every_process_with_a_message(
    tmp_path, tiny_synthetic_data_dir
):
    """Each process given its own workdir (as on hosts without shared storage): both stop at
    start-up naming process 1; then a shared workdir but a data dir only process 0 sees."""
    own_workdir = lambda i: train_command(tmp_path / f"host{i}", tiny_synthetic_data_dir, *RUN)
    outputs = finish_job(start_job(own_workdir, REPO), TIMEOUT_S, expect_rc=None)
    for output in outputs:
        assert "processes [1] do not see the workdir" in output, output[-3000:]

    empty = tmp_path / "empty_data"
    own_data = lambda i: train_command(
        tmp_path / "shared", tiny_synthetic_data_dir if i == 0 else empty, *RUN
    )
    outputs = finish_job(start_job(own_data, REPO), TIMEOUT_S, expect_rc=None)
    for output in outputs:
        assert "pclr_synthetic/tiny" in output and "is missing on processes [1]" in output, output[
            -3000:
        ]
    assert not (tmp_path / "shared" / "checkpoints").exists()
