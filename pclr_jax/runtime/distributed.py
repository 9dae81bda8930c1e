"""Devices and processes: the ``'data'`` mesh and multi-host start-up.

Every process of a multi-host job runs the same program. ``maybe_initialize_distributed()`` connects
them (``jax.distributed``) before anything touches a device; ``make_mesh()`` then spans every
device of every process along one axis, ``'data'``, over which the training step splits the batch.
See ``docs/training_step.md`` for GPU clusters and TPU pods.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from pclr_jax.runtime.launchers import local_device_ids, torchrun_initialize_args

DATA_AXIS = "data"

log = logging.getLogger(__name__)

# Environment variables of launchers that start one process per host/GPU and that jax's own
# cluster detection understands (it then finds the coordinator, process count and id itself).
_CLUSTER_MARKERS = {
    "SLURM_STEP_NUM_TASKS": "Slurm",  # srun: the number of tasks of this job step
    "OMPI_COMM_WORLD_SIZE": "Open MPI",  # mpirun
    "TPU_WORKER_HOSTNAMES": "Cloud TPU (GKE)",  # comma-separated hosts of a TPU slice
}


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``'data'`` over ``devices`` (default: all devices of all processes).

    The axis type is ``Auto`` (sharding propagated by the compiler, the setting ``jax.shard_map``
    code is written for); ``jax.make_mesh`` would default to ``Explicit`` axes.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def _cluster_launcher() -> str | None:
    """The multi-process launcher this process was started by, if any (more than one task)."""
    if os.environ.get("PCLR_AUTO_DISTRIBUTED") == "1":
        return "PCLR_AUTO_DISTRIBUTED=1"
    for variable, launcher in _CLUSTER_MARKERS.items():
        value = os.environ.get(variable, "")
        count = len(value.split(",")) if variable == "TPU_WORKER_HOSTNAMES" else value
        if str(count).isdigit() and int(count) > 1:
            return launcher
    return None


def maybe_initialize_distributed(tolerate_lost_processes: bool = False) -> bool:
    """Connects the processes of a multi-host job; a no-op for a single process.

    In order of precedence:

    1. ``jax.distributed`` already initialised: nothing to do.
    2. ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) set: initialise with it and with
       ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` when set; unset ones are auto-detected by jax.
    3. Started by a multi-task launcher (Slurm ``srun``, Open MPI ``mpirun``, a multi-host TPU
       slice on GKE), or ``PCLR_AUTO_DISTRIBUTED=1`` (e.g. the workers of a Cloud TPU VM pod
       slice): ``jax.distributed.initialize()`` with jax's cluster auto-detection.
    4. torchrun-style variables (``MASTER_ADDR``, ``WORLD_SIZE`` > 1, ``RANK``): initialise from
       them (:func:`pclr_jax.runtime.launchers.torchrun_initialize_args`).
    5. Otherwise: a single process; nothing is initialised.

    In every case the process's local GPUs come from
    :func:`pclr_jax.runtime.launchers.local_device_ids`
    (e.g. all 8 GPUs of a node for one Slurm task per node, where jax alone would take one).

    ``tolerate_lost_processes=True`` sets ``jax_enable_recoverability`` first: the death of a
    process no longer aborts the others, which then need a watch and an ordered shutdown of
    their own (:func:`pclr_jax.runtime.peer_watch.watched_job` does both).

    Returns:
      True when this call initialised ``jax.distributed``.
    """
    if jax.distributed.is_initialized():
        return False
    device_ids = local_device_ids(os.environ)
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    torchrun = torchrun_initialize_args(os.environ)
    launcher = _cluster_launcher()
    if not (coordinator or launcher or torchrun):
        return False
    jax.config.update("jax_enable_recoverability", tolerate_lost_processes)
    if coordinator:
        num_processes = os.environ.get("JAX_NUM_PROCESSES")
        process_id = os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(
            coordinator,
            num_processes=int(num_processes) if num_processes else None,
            process_id=int(process_id) if process_id else None,
            local_device_ids=device_ids,
        )
    elif launcher is not None:
        log.info("%s launch detected: initialising jax.distributed", launcher)
        jax.distributed.initialize(local_device_ids=device_ids)
    elif torchrun is not None:
        log.info("torchrun-style launch detected: initialising jax.distributed")
        jax.distributed.initialize(**torchrun, local_device_ids=device_ids)
    log.info(
        "process %d of %d; %d local and %d global devices (local GPU ids %s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        device_ids,
    )
    return True
