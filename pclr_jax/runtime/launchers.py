"""What a multi-process launcher tells each process: its local GPUs, and torchrun's rendezvous.

Pure functions of the environment (a ``Mapping`` of variable names to values), so they are tested
without a cluster. :func:`pclr_jax.runtime.distributed.maybe_initialize_distributed` passes their
results
to ``jax.distributed.initialize``.

Why jax's own choice is not enough: under Slurm jax restricts every process to one GPU,
``[SLURM_LOCALID]``. With one task per node and 8 GPUs that trains on one GPU per host; with one
task per GPU under Slurm's per-task binding (each task sees one GPU, ``CUDA_VISIBLE_DEVICES``
holds one id) task 3 asks for device 3 of 1 ("invalid device ordinal").
"""

from __future__ import annotations

import re
from collections.abc import Mapping


def _count_list(value: str | None) -> int | None:
    """Number of ids in a comma-separated device list; ``None`` when unset."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "NoDevFiles", "-1"):
        return 0
    return len(value.split(","))


def visible_gpu_count(env: Mapping[str, str]) -> int | None:
    """GPUs this process can see: ``CUDA_VISIBLE_DEVICES`` (or ROCm's ``HIP_VISIBLE_DEVICES``),
    else Slurm's ``SLURM_GPUS_ON_NODE``; ``None`` when nothing says."""
    for name in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        count = _count_list(env.get(name))
        if count is not None:
            return count
    gpus_on_node = env.get("SLURM_GPUS_ON_NODE")
    return int(gpus_on_node) if gpus_on_node and gpus_on_node.isdigit() else None


def slurm_tasks_on_node(env: Mapping[str, str]) -> int:
    """Tasks of this job step on this node, from ``SLURM_STEP_TASKS_PER_NODE`` (or
    ``SLURM_TASKS_PER_NODE``), whose ``"8(x2),4"`` form lists nodes in ``SLURM_NODEID`` order."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return int(env.get("SLURM_NTASKS_PER_NODE", "1"))
    per_node = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot read Slurm tasks per node {spec!r}")
        per_node += [int(match[1])] * int(match[2] or 1)
    node = int(env.get("SLURM_NODEID", "0"))
    if node >= len(per_node):
        raise ValueError(f"SLURM_NODEID={node} but tasks per node {spec!r} lists {len(per_node)}")
    return per_node[node]


def split_devices(n_devices: int, n_tasks: int, local_rank: int) -> list[int]:
    """Task ``local_rank``'s contiguous share of ``n_devices`` devices split over ``n_tasks``."""
    if n_devices % n_tasks:
        raise ValueError(
            f"{n_devices} visible GPUs do not split evenly over {n_tasks} tasks on this node: "
            "launch a number of tasks per node that divides the GPUs, or set "
            "JAX_LOCAL_DEVICE_IDS for each task"
        )
    share = n_devices // n_tasks
    return list(range(local_rank * share, (local_rank + 1) * share))


def local_device_ids(env: Mapping[str, str]) -> list[int] | None:
    """The local GPU ordinals this process should use, or ``None`` to leave jax's default.

    Ordinals count the GPUs this process sees (after ``CUDA_VISIBLE_DEVICES``), as
    ``jax.distributed.initialize(local_device_ids=...)`` expects them. In order:

    1. ``JAX_LOCAL_DEVICE_IDS`` set: ``None``; jax reads it itself.
    2. Slurm (``SLURM_LOCALID`` with ``SLURM_JOB_ID``) or torchrun-style (``LOCAL_RANK``):
       with ``n`` visible GPUs and ``t`` tasks on this node,

       * one task per node, or GPUs bound per task (``SLURM_GPUS_PER_TASK``, which makes Slurm
         bind each task to its own GPUs): all ``n``, ``[0, ..., n-1]``;
       * otherwise every task sees all of the node's GPUs: task ``l`` takes its contiguous
         share, ``[l*n/t, ..., (l+1)*n/t - 1]``;
       * no GPU visible (a CPU job) or the count unknown: ``None``.
    3. Anything else (plain ``JAX_*`` variables, TPU): ``None`` (all visible devices; jax never
       restricts TPU devices).
    """
    if env.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    if "SLURM_LOCALID" in env and "SLURM_JOB_ID" in env:
        local_rank = int(env["SLURM_LOCALID"])
        tasks = slurm_tasks_on_node(env)
        bound_per_task = bool(env.get("SLURM_GPUS_PER_TASK"))
    elif "LOCAL_RANK" in env:
        local_rank = int(env["LOCAL_RANK"])
        tasks = int(env.get("LOCAL_WORLD_SIZE", "1"))
        bound_per_task = False
    else:
        return None
    n_gpus = visible_gpu_count(env)
    if not n_gpus:
        return None
    if tasks == 1 or bound_per_task:
        return list(range(n_gpus))
    return split_devices(n_gpus, tasks, local_rank)


def torchrun_initialize_args(env: Mapping[str, str]) -> dict | None:
    """``jax.distributed.initialize`` arguments from torchrun-style variables (``MASTER_ADDR``,
    ``WORLD_SIZE``, ``RANK``), or ``None`` when they do not describe a multi-process job.

    The coordinator listens on ``JAX_COORDINATOR_PORT``, else on ``MASTER_PORT + 1``: torchrun's
    own rendezvous store already holds ``MASTER_PORT``.
    """
    if not env.get("MASTER_ADDR") or int(env.get("WORLD_SIZE", "1")) < 2 or "RANK" not in env:
        return None
    port = env.get("JAX_COORDINATOR_PORT") or str(int(env.get("MASTER_PORT", "29500")) + 1)
    return {
        "coordinator_address": f"{env['MASTER_ADDR']}:{port}",
        "num_processes": int(env["WORLD_SIZE"]),
        "process_id": int(env["RANK"]),
    }
