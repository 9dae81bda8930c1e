"""Local GPU ids and torchrun rendezvous derived from launcher environments (pure functions)."""

import pytest

from pclr_jax.runtime.launchers import (
    local_device_ids,
    slurm_tasks_on_node,
    torchrun_initialize_args,
    visible_gpu_count,
)

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}


def test_slurm_one_task_per_node_uses_all_eight_gpus():
    env = {
        **SLURM,
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "1(x4)",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    }
    assert local_device_ids(env) == [0, 1, 2, 3, 4, 5, 6, 7]
    # Slurm's gres count when CUDA_VISIBLE_DEVICES is not exported
    del env["CUDA_VISIBLE_DEVICES"]
    assert local_device_ids({**env, "SLURM_GPUS_ON_NODE": "8"}) == list(range(8))


def test_slurm_one_task_per_gpu_seeing_every_gpu_takes_its_own():
    env = {
        **SLURM,
        "SLURM_LOCALID": "5",
        "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
        "SLURM_NODEID": "1",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    }
    assert local_device_ids(env) == [5]
    # two tasks per node, four GPUs each
    env.update(SLURM_LOCALID="1", SLURM_STEP_TASKS_PER_NODE="2(x2)")
    assert local_device_ids(env) == [4, 5, 6, 7]


def test_slurm_gpus_bound_per_task_use_every_visible_gpu():
    # --gpus-per-task=1: Slurm binds each task to its GPU; ordinal SLURM_LOCALID would not exist
    env = {
        **SLURM,
        "SLURM_LOCALID": "3",
        "SLURM_STEP_TASKS_PER_NODE": "8",
        "SLURM_GPUS_PER_TASK": "1",
        "CUDA_VISIBLE_DEVICES": "3",
    }
    assert local_device_ids(env) == [0]
    env.update(
        SLURM_GPUS_PER_TASK="4", SLURM_STEP_TASKS_PER_NODE="2", CUDA_VISIBLE_DEVICES="4,5,6,7"
    )
    assert local_device_ids(env) == [0, 1, 2, 3]


def test_uneven_split_and_unknown_counts():
    env = {**SLURM, "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "3"}
    assert local_device_ids(env) is None  # GPU count unknown (or a CPU job): jax's default
    with pytest.raises(ValueError, match="do not split evenly over 3 tasks"):
        local_device_ids({**env, "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert local_device_ids({**env, "CUDA_VISIBLE_DEVICES": ""}) is None
    assert local_device_ids({**env, "JAX_LOCAL_DEVICE_IDS": "0"}) is None  # jax reads it
    assert local_device_ids({"CUDA_VISIBLE_DEVICES": "0,1"}) is None  # no launcher


def test_slurm_tasks_per_node_forms():
    assert slurm_tasks_on_node({"SLURM_STEP_TASKS_PER_NODE": "8(x2),4", "SLURM_NODEID": "2"}) == 4
    assert slurm_tasks_on_node({"SLURM_TASKS_PER_NODE": "2,1", "SLURM_NODEID": "0"}) == 2
    assert slurm_tasks_on_node({"SLURM_NTASKS_PER_NODE": "4"}) == 4
    with pytest.raises(ValueError, match="SLURM_NODEID=3"):
        slurm_tasks_on_node({"SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_NODEID": "3"})


def test_torchrun_style_environment():
    env = {
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
        "WORLD_SIZE": "16",
        "RANK": "9",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    }
    assert torchrun_initialize_args(env) == {
        "coordinator_address": "node0:29501",
        "num_processes": 16,
        "process_id": 9,
    }
    assert (
        torchrun_initialize_args({**env, "JAX_COORDINATOR_PORT": "1234"})["coordinator_address"]
        == "node0:1234"
    )
    assert local_device_ids(env) == [1]
    assert torchrun_initialize_args({**env, "WORLD_SIZE": "1"}) is None
    assert visible_gpu_count({"HIP_VISIBLE_DEVICES": "0,1"}) == 2
