"""The training feeds on two processes (2 faked CPU devices each, ``jax.distributed`` on
127.0.0.1): the device-resident loader and the device prefetcher both yield, across processes,
exactly the single-host loader's global batches, and count consumed batches alike."""

import os
import pathlib
import sys

from multiprocess_jobs import finish_job, job_environment, start_job

WORKER = pathlib.Path(__file__).with_name("feeds_worker.py")


def test_both_feeds_give_the_single_host_batches_on_two_processes():
    # The worker imports tests' modules and this checkout's pclr_jax (not an installed one).
    path = os.pathsep.join([str(WORKER.parent), str(WORKER.parents[1])])
    env = {**job_environment(), "PYTHONPATH": path}
    outputs = finish_job(start_job([sys.executable, str(WORKER)], env=env), timeout=240)
    for i, output in enumerate(outputs):
        assert f"feeds agree {i}" in output
