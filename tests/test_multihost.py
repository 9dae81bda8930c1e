"""Multi-host start-up and the 'data' mesh. Two processes (``jax.distributed`` on 127.0.0.1, 2
faked CPU devices each) take the same training step as one process with 4 devices."""

import pathlib
import sys

import jax
import numpy as np
from jax.sharding import AxisType
from multihost_worker import GLOBAL_PAIRS, global_batch, one_step
from multiprocess_jobs import finish_job, start_job

from pclr_jax.runtime.distributed import make_mesh, maybe_initialize_distributed

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 240


def _run_two_processes(out_dir: pathlib.Path) -> None:
    finish_job(start_job([sys.executable, str(WORKER), str(out_dir)]), TIMEOUT_S)


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
        "MASTER_ADDR",
        "WORLD_SIZE",
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
