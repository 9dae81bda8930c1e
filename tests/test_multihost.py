"""Multi-host start-up and the 'data' mesh. Two processes (``jax.distributed`` on 127.0.0.1, 2
faked CPU devices each) take the same training step as one process with 4 devices."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import AxisType
from multihost_worker import GLOBAL_PAIRS, global_batch, one_step

from pclr_jax.distributed import make_mesh, maybe_initialize_distributed

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_processes(out_dir: pathlib.Path) -> None:
    port = _free_port()
    base_env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out_dir)],
            env={**base_env, "JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
            proc.communicate()
        raise AssertionError(f"the two processes did not finish within {TIMEOUT_S} s") from None
    for i, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {i} failed:\n{output[-4000:]}"


def test_two_processes_equal_one_process_with_four_devices(tmp_path):
    _run_two_processes(tmp_path)
    result = np.load(tmp_path / "process_0.npz")

    reference = one_step(make_mesh(jax.devices()[:4]), global_batch())

    assert jax.device_count() >= 4 and GLOBAL_PAIRS % 4 == 0
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-6)
    np.testing.assert_array_equal(result["initial"], reference["initial"])
    np.testing.assert_allclose(result["params"], reference["params"], rtol=1e-5, atol=1e-7)
    # The step moved the parameters well beyond the tolerance.
    assert np.max(np.abs(reference["params"] - reference["initial"])) > 1e-3


def test_single_process_needs_no_initialisation(monkeypatch):
    for variable in (
        "JAX_COORDINATOR_ADDRESS",
        "PCLR_AUTO_DISTRIBUTED",
        "SLURM_STEP_NUM_TASKS",
        "OMPI_COMM_WORLD_SIZE",
        "TPU_WORKER_HOSTNAMES",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # a one-task Slurm job is single-process
    assert maybe_initialize_distributed() is False
    assert jax.process_count() == 1


def test_make_mesh_spans_devices_on_one_auto_axis():
    mesh = make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.size == jax.device_count()
    assert mesh.axis_types == (AxisType.Auto,)
    assert make_mesh(jax.devices()[:3]).size == 3
