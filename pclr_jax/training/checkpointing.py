"""Orbax checkpoints of a training run: train state, data-iterator state and config, together.

A checkpoint directory ``<workdir>/checkpoints/<step>/`` holds three items:

* ``state``: the whole ``TrainState`` (parameters, optimizer state, batch statistics, RNG, step);
* ``loader``: the grain iterator state, so a resumed run continues on exactly the next batch;
* ``config``: the run's config as JSON, for humans and for ``pclr`` tools reading a workdir.

Saves are asynchronous; the manager keeps the latest ``keep`` checkpoints plus, when asked, the
one with the best validation retrieval (``retrieval_top1``). A save interrupted by a crash never
becomes visible: Orbax writes into a temporary directory (``<step>.orbax-checkpoint-tmp``) and
renames it when complete; a restarted run ignores such leftovers and deletes them when it opens
the manager (``cleanup_tmp_directories``; tested in ``tests/test_lost_process.py``).

With several processes, every process calls ``save_checkpoint`` and ``restore_latest`` at the
same steps (Orbax's default multiprocessing options: all processes take part in its barriers,
process 0 is the primary host that creates and commits the directory; each process writes its
own loader state, ``loader/process_<i>-of-<n>.json``). The workdir must therefore be shared.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from pclr_jax.runtime.storage import as_path

BEST_METRIC = "retrieval_top1"


def make_checkpoint_manager(
    workdir: str | os.PathLike, keep: int, keep_best: bool
) -> ocp.CheckpointManager:
    """A manager over ``<workdir>/checkpoints`` keeping the last ``keep`` (and the best) steps."""
    preserve: list[policies.PreservationPolicy] = [policies.LatestN(n=keep)]
    if keep_best:
        preserve.append(
            policies.BestN(
                get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                reverse=False,  # ascending sort; the last n (largest retrieval) are kept
                n=1,
                keep_checkpoints_without_metrics=False,
            )
        )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(preserve),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    directory = as_path(workdir) / "checkpoints"
    return ocp.CheckpointManager(
        directory, options=options, item_names=("state", "loader", "config")
    )


def resume_hint(workdir: str | os.PathLike) -> str:
    """One sentence for a stopped multi-host job: the newest complete checkpoint and how to resume.

    Reads the folder only (no manager: it is called from a watchdog thread while the main thread
    may hang); a checkpoint still being written (``<step>.orbax-checkpoint-tmp``) is not complete.
    """
    directory = as_path(workdir) / "checkpoints"
    steps = ocp.path.step.checkpoint_steps(directory)
    if not steps:
        return (
            f"No checkpoint is complete in {directory}: start every process again with the same "
            "command to start the run again."
        )
    return (
        f"The last complete checkpoint is step {max(steps)} in {directory}: start every process "
        "again with the same command to resume from it."
    )


def save_checkpoint(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    loader_iterator: Any,
    config: dict,
    metrics: dict[str, float] | None = None,
) -> None:
    """Starts an asynchronous save of step ``step`` (returns before the write completes)."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            loader=grain.checkpoint.CheckpointSave(loader_iterator),
            config=ocp.args.JsonSave(config),
        ),
        metrics=metrics,
        force=True,
    )


def restore_latest(
    manager: ocp.CheckpointManager, state_template: Any, loader_iterator: Any
) -> Any | None:
    """Restores the newest checkpoint into ``state_template``'s structure and shardings.

    The loader iterator's position is restored in place. Returns the restored state, or ``None``
    when the workdir has no checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            loader=grain.checkpoint.CheckpointRestore(loader_iterator),
        ),
    )
    return restored["state"]
