"""A process of a 2-process training job (localhost, 2 faked CPU devices each) is SIGKILLed
mid-run: the survivor exits with status 75 within the configured bound, with one line naming the
lost process, the last complete checkpoint and how to resume; restarting both processes resumes
from that checkpoint, ignoring and deleting a partial one left behind, and finishes."""

import pathlib
import re
import signal
import time

import pytest
from multiprocess_jobs import finish_job, kill_job, start_job
from test_multiprocess_training import RUN, STEPS, TIMEOUT_S
from test_train_loop import checkpoint_steps, losses_by_step, train_command, wait_for_step

from pclr_jax.runtime.peer_watch import EXIT_PROCESS_LOST

REPO = pathlib.Path(__file__).resolve().parents[1]
LOST_AFTER_S = 10
pytestmark = pytest.mark.slow  # two two-process jobs


def test_a_killed_process_stops_the_other_with_status_75_and_a_restart_resumes(
    tmp_path, tiny_synthetic_data_dir
):
    command = train_command(
        tmp_path,
        tiny_synthetic_data_dir,
        *RUN,
        f"--config.distributed.lost_process_timeout_s={LOST_AFTER_S}",
    )
    procs = start_job(command, REPO)
    try:
        wait_for_step(tmp_path, 5, procs[0], timeout=TIMEOUT_S)
        # Checkpoints are saved asynchronously: on a loaded machine step 3's may still be in
        # its temporary folder when step 5 is logged. Kill once one is complete.
        deadline = time.monotonic() + TIMEOUT_S
        while not checkpoint_steps(tmp_path):
            assert procs[0].poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)  # the Python process of rank 1 itself
        killed = time.monotonic()
        output = procs[0].communicate(timeout=120)[0]
        took = time.monotonic() - killed
    finally:
        kill_job(procs)
    assert procs[0].returncode == EXIT_PROCESS_LOST, output[-3000:]
    # Heartbeats every 2 s: lost after 10-12 s; the rest is slack for a loaded machine.
    assert took < LOST_AFTER_S + 20, took
    lines = [line for line in output.splitlines() if "was lost" in line]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith("pclr: process 1 of 2 was lost (no heartbeat for ")
    assert "process 0 stops with exit status 75" in lines[0]
    last = int(re.search(r"last complete checkpoint is step (\d+) in ", lines[0]).group(1))
    assert last == checkpoint_steps(tmp_path)[-1] and last < STEPS
    assert "start every process again with the same command to resume from it" in lines[0]

    # A save that never completed (as one interrupted by the kill) must not be resumed from.
    partial = tmp_path / "checkpoints" / f"{last + 1}.orbax-checkpoint-tmp"
    partial.mkdir(exist_ok=True)
    (partial / "incomplete").write_text("")
    outputs = finish_job(start_job(command, REPO), TIMEOUT_S)
    progress = [line for line in outputs[0].splitlines() if line.startswith("train: ")]
    assert progress[0].startswith(f"train: {last + 1}/{STEPS} "), progress[:2]
    assert not partial.exists()
    assert checkpoint_steps(tmp_path)[-1] == STEPS
    assert sorted(losses_by_step(tmp_path)) == list(range(1, STEPS + 1))
