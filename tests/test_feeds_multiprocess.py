"""The training feeds on two processes (2 faked CPU devices each, ``jax.distributed`` on
127.0.0.1): the device-resident loader and the device prefetcher both yield, across processes,
exactly the single-host loader's global batches, and count consumed batches alike."""

import os
import pathlib
import subprocess
import sys

from test_multihost import _free_port

WORKER = pathlib.Path(__file__).with_name("feeds_worker.py")


def test_both_feeds_give_the_single_host_batches_on_two_processes():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}",
        "JAX_NUM_PROCESSES": "2",
        "PYTHONPATH": str(WORKER.parent),
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER)],
            env={**env, "JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for i, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"process {i}:\n{output[-4000:]}"
        assert f"feeds agree {i}" in output
