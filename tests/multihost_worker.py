"""One process of the two-process training-step test (``tests/test_multihost.py``).

Run as ``python tests/multihost_worker.py OUT_DIR`` with ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
set: it joins the job through ``maybe_initialize_distributed``, feeds its half of a fixed global
batch with ``jax.make_array_from_process_local_data``, runs one training step and (process 0)
writes the loss and the updated parameters to ``OUT_DIR/process_0.npz``.

``one_step(mesh, local_batch)`` is also what the test runs in a single process on 4 devices.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

TINY = dict(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(32, 32),
)
GLOBAL_PAIRS = 8


def global_batch() -> dict[str, np.ndarray]:
    """A fixed global batch of ``GLOBAL_PAIRS`` pairs of random ``(256, 12)`` 'ECGs'."""
    rng = np.random.default_rng(42)
    shape = (GLOBAL_PAIRS, TINY["n_samples"], 12)
    return {
        "view_a": rng.normal(size=shape).astype(np.float32),
        "view_b": rng.normal(size=shape).astype(np.float32),
        "patient_id": np.arange(GLOBAL_PAIRS, dtype=np.int32),
    }


def _flat_state(state) -> np.ndarray:
    leaves = jax.tree.leaves(state.params) + jax.tree.leaves(state.batch_stats)
    return np.concatenate([np.asarray(x).ravel() for x in leaves])


def one_step(mesh, local_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """From a fixed initial state, one step: its loss and the flattened parameters and batch
    statistics before (``initial``) and after (``params``)."""
    from pclr_jax.losses import get_loss
    from pclr_jax.model.encoder import EncoderConfig
    from pclr_jax.step.optimizers import make_optimizer
    from pclr_jax.step.train_state import create_train_state
    from pclr_jax.step.train_step import make_train_step

    config = EncoderConfig(**TINY)
    opt_cfg = ml_collections.ConfigDict(
        dict(
            # LARS' update is linear in the gradient: differences in the order of the cross-device
            # sums stay at float32 rounding (an Adam-type first step, g / (|g| + eps), would amplify
            # them for gradient entries near eps).
            name="lars",
            learning_rate=0.5,
            lr_scaling="none",
            base_batch_pairs=256,
            warmup_steps=0,
            schedule="constant",
            weight_decay=1e-4,
            grad_clip_norm=1.0,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
        )
    )
    optimizer, _ = make_optimizer(opt_cfg, GLOBAL_PAIRS, total_steps=10)
    state = create_train_state(config, get_loss("ntxent"), optimizer, jax.random.key(0), mesh)
    step = make_train_step(config, get_loss("ntxent", temperature=0.1), optimizer, mesh)
    sharding = NamedSharding(mesh, P("data"))
    batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
    initial = _flat_state(state)
    state, metrics = step(state, batch)
    return {"loss": np.asarray(metrics["loss"]), "initial": initial, "params": _flat_state(state)}


def main(out_dir: str) -> None:
    from pclr_jax.runtime.distributed import make_mesh, maybe_initialize_distributed

    if not maybe_initialize_distributed():
        raise RuntimeError("JAX_COORDINATOR_ADDRESS is not set: not a multi-process run")
    index, count = jax.process_index(), jax.process_count()
    rows = GLOBAL_PAIRS // count
    local = {k: v[index * rows : (index + 1) * rows] for k, v in global_batch().items()}
    result = one_step(make_mesh(), local)
    if index == 0:
        np.savez(pathlib.Path(out_dir) / "process_0.npz", **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
