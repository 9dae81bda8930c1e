"""PCLR pretraining: config, mesh, data, state, steps, checkpoints, evaluation, export.

Everything a run writes lives in ``workdir``:

* ``checkpoints/<step>/``: Orbax checkpoints (train state, loader state, config);
* ``metrics.jsonl``, ``tensorboard/``, ``curves.png``: training and evaluation metrics;
* ``encoder/`` (Orbax) and ``encoder.h5`` (Keras): the trained encoder, with its projection head;
* ``embeddings_<split>.parquet``: the evaluation split's embeddings (``sample_id, latent_*``);
* ``summary.json``: the final evaluation beside a randomly initialised encoder.

A run started on a workdir that holds a checkpoint resumes from it, on exactly the next batch.
SIGTERM or SIGINT, reaching any process, saves a checkpoint at a step all processes agree on
(``training/preemption.py``) and exits cleanly; a non-finite loss stops the run with
``NonFiniteLossError`` and leaves the last good checkpoint untouched. Metrics are read back only
every ``log_every_steps`` steps and at checkpoints (``training/step_metrics.py``): the host runs
ahead of the devices in between.
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from pclr_jax.data.prepared import load_prepared
from pclr_jax.losses import get_loss
from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.runtime.peer_watch import watched_job
from pclr_jax.runtime.progress import Progress
from pclr_jax.runtime.storage import as_path, check_shared, write_through_local_file
from pclr_jax.step.optimizers import make_optimizer
from pclr_jax.step.train_state import create_train_state, replicated
from pclr_jax.step.train_step import make_local_embed_fn, make_train_step
from pclr_jax.training import checkpointing
from pclr_jax.training.data_setup import ensure_prepared
from pclr_jax.training.metric_log import MetricLog, plot_curves
from pclr_jax.training.periodic_eval import (
    ProbeTask,
    embed_split,
    probe_between,
    probe_within_split,
    retrieval_metrics,
)
from pclr_jax.training.preemption import StopSignals, signal_name
from pclr_jax.training.step_metrics import Fetched, InputStallMeter, PendingFetch, fetch
from pclr_jax.training.train_feed import make_train_feed
from pclr_jax.weights.encoder_checkpoint import save_encoder
from pclr_jax.weights.keras_export import write_keras_h5

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


def encoder_variables(state) -> dict:
    """The encoder's ``{'params', 'batch_stats'}`` out of a train state (head included)."""
    return {"params": state.params["model"], "batch_stats": state.batch_stats}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) a pretraining run; returns the final summary (also in summary.json).

    ``workdir`` may be local or remote (``gs://...``); with several processes it must be the same
    folder for all of them (checked at start-up, see :mod:`pclr_jax.runtime.storage`). When a
    process of a multi-host job dies, the others exit with status 75 within
    ``config.distributed.lost_process_timeout_s`` seconds, saying how to resume
    (:mod:`pclr_jax.runtime.peer_watch`).
    """
    workdir = as_path(workdir)
    with watched_job(
        config.distributed.lost_process_timeout_s, lambda: checkpointing.resume_hint(workdir)
    ):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    check_shared(workdir)
    is_main = jax.process_index() == 0
    model_config = EncoderConfig.from_dict(config.model.to_dict())
    mesh = make_mesh()
    if config.batch_pairs % mesh.size:
        raise ValueError(f"batch_pairs={config.batch_pairs} must divide over {mesh.size} devices")

    ensure_prepared(config.data, model_config.n_samples)
    data_dir = config.data.data_dir
    train_split = load_prepared(
        config.data.name, config.data.train_split, data_dir, config.data.config
    )
    eval_split = load_prepared(
        config.data.name, config.data.eval_split, data_dir, config.data.config
    )
    feed = make_train_feed(config, train_split, mesh)

    optimizer, schedule = make_optimizer(config.optimizer, config.batch_pairs, config.total_steps)
    loss = get_loss(config.loss.name, **config.loss.hparams.to_dict())
    state = create_train_state(model_config, loss, optimizer, jax.random.key(config.seed), mesh)
    train_step = make_train_step(
        model_config,
        loss,
        optimizer,
        mesh,
        sync_batch_norm=config.sync_batch_norm,
        grad_cache_microbatch=config.grad_cache_microbatch,
    )
    embed_fn = make_local_embed_fn(model_config, mesh)
    tasks = [ProbeTask.parse(spec) for spec in config.eval.probe_tasks]

    manager = checkpointing.make_checkpoint_manager(
        workdir, config.checkpoint.keep, config.checkpoint.keep_best
    )
    restored = checkpointing.restore_latest(manager, state, feed)
    if restored is not None:
        state = restored
    start_step = int(jax.device_get(state.step))
    metric_log = MetricLog(workdir, enabled=is_main)
    metric_log.truncate_after(start_step)
    if start_step:
        log.info("resumed from step %d", start_step)

    def evaluate(step: int) -> dict[str, float]:
        embeddings = embed_split(
            embed_fn, encoder_variables(state), eval_split, config.eval.batch_size
        )
        metrics = retrieval_metrics(embeddings, eval_split.index)
        metrics.update(probe_within_split(embeddings, eval_split.index, tasks, config.seed))
        metric_log.write(step, "eval", metrics)
        return metrics

    def save(step: int, metrics: dict[str, float] | None = None) -> None:
        checkpointing.save_checkpoint(manager, step, state, feed, config.to_dict(), metrics=metrics)
        metric_log.flush()  # a remote log is uploaded at checkpoints (training/metric_log.py)

    ecgs_per_step = 2 * config.batch_pairs
    step = start_step
    meter = InputStallMeter()
    is_log_step = lambda s: s % config.log_every_steps == 0 or s == config.total_steps
    with (
        StopSignals(mesh) as stop,
        contextlib.closing(feed),
        Progress(
            "train",
            total=config.total_steps,
            initial=start_step,
            unit="step",
            every=config.log_every_steps,
            enabled=is_main,
        ) as progress,
    ):
        shown = start_step  # the last step whose metrics reached the host

        def take(fetched: Fetched) -> int:
            """Checks, shows and logs a fetched step; returns the agreed stop signal (0: none)."""
            nonlocal shown
            if fetched.nonfinite_step:
                manager.wait_until_finished()
                raise NonFiniteLossError(
                    f"the loss was not finite at step {fetched.nonfinite_step} (loss "
                    f"{fetched.metrics['loss']} at step {fetched.step}); the last good checkpoint "
                    f"(step {manager.latest_step()}) in {workdir / 'checkpoints'} is intact"
                )
            meter.count_steps(fetched.step - shown)
            progress.set_postfix(loss=f"{fetched.metrics['loss']:.4f}")
            progress.update(fetched.step - shown)
            shown = fetched.step
            if is_log_step(fetched.step):
                metrics = {**fetched.metrics, **meter.window(ecgs_per_step)}
                metric_log.write(fetched.step, "train", metrics)
            return fetched.stop_signal

        nonfinite_step = jax.device_put(np.int32(0), replicated(mesh))
        pending: PendingFetch | None = None
        while step < config.total_steps:
            control = {"signals": stop.device_flags(), "nonfinite_step": nonfinite_step}
            state, metrics = train_step(state, meter.next_batch(feed), control)
            nonfinite_step = metrics["nonfinite_step"]
            step += 1
            stop_signal = 0
            if pending is not None:  # the last log step's metrics, read while this step runs
                stop_signal = take(pending.result())
                pending = None
            evaluate_now = step % config.eval.every_steps == 0 or step == config.total_steps
            save_now = evaluate_now or step % config.checkpoint.every_steps == 0
            if save_now or stop_signal or step == config.total_steps:
                # never save, evaluate or stop on an unchecked state
                stop_signal = take(fetch(step, metrics)) or stop_signal
            elif is_log_step(step):
                pending = PendingFetch(step, metrics)
            eval_metrics = None
            if evaluate_now:
                eval_metrics = evaluate(step)
                meter.restart()
            if save_now:
                save(step, eval_metrics)
            if stop_signal:
                stopped_by = signal_name(stop_signal)
                log.warning("%s received: saving step %d and stopping", stopped_by, step)
                if not save_now:
                    save(step)
                manager.wait_until_finished()
                metric_log.close()
                return {"stopped_by": stopped_by, "step": step}
    manager.wait_until_finished()

    summary = final_report(config, model_config, state, embed_fn, workdir, tasks)
    metric_log.close()
    if is_main:
        write_through_local_file(
            workdir / "curves.png", lambda path: plot_curves(metric_log.path, path)
        )
    export_encoder(model_config, state, workdir)
    return summary


def export_encoder(model_config: EncoderConfig, state, workdir: epath.Path) -> None:
    """Writes the trained encoder (with head) as an Orbax directory and as a Keras ``.h5``.

    Every process must call it: the Orbax save is collective (its barriers wait for all
    processes; process 0 writes). Process 0 alone writes the ``.h5``; all processes return once
    both exports are complete, so any of them can read them.
    """
    from jax.experimental import multihost_utils

    variables = jax.device_get(encoder_variables(state))
    save_encoder(
        workdir / "encoder", model_config, variables, {"step": int(state.step)}, overwrite=True
    )
    if jax.process_index() == 0:
        write_through_local_file(
            workdir / "encoder.h5", lambda path: write_keras_h5(path, model_config, variables)
        )
    multihost_utils.sync_global_devices("pclr encoder exported")


def final_report(config, model_config, state, embed_fn, workdir, tasks) -> dict:
    """Retrieval and linear probes on held-out patients, trained vs randomly initialised encoder.

    Probes are fitted on the training split's ECGs and scored on the test split; retrieval is
    measured among the test split's ECGs. ``config.eval.random_init_baseline = False`` (optional
    field, default True) leaves out the random encoder (``pclr study`` evaluates cells itself).
    """
    data_dir = config.data.data_dir
    fit_split = load_prepared(
        config.data.name, config.data.train_split, data_dir, config.data.config
    )
    test_split = load_prepared(
        config.data.name, config.eval.final_split, data_dir, config.data.config
    )
    encoders = {"pclr": encoder_variables(state)}
    if config.eval.get("random_init_baseline", True):
        encoders["random_init"] = init_variables(model_config, jax.random.key(config.seed + 1))
    rows = {}
    for name, variables in encoders.items():
        test_x = embed_split(embed_fn, variables, test_split, config.eval.batch_size)
        metrics = retrieval_metrics(test_x, test_split.index)
        if tasks:  # the training split is embedded only for the probes
            fit_x = embed_split(embed_fn, variables, fit_split, config.eval.batch_size)
            metrics.update(probe_between(fit_x, fit_split.index, test_x, test_split.index, tasks))
        rows[name] = metrics
        if name == "pclr" and jax.process_index() == 0:
            write_embeddings(
                test_x, test_split.index, workdir / f"embeddings_{config.eval.final_split}.parquet"
            )
    table = pd.DataFrame(rows)
    summary = {"step": int(state.step), "split": config.eval.final_split, "metrics": rows}
    if jax.process_index() == 0:
        write_through_local_file(
            workdir / "summary.json", lambda path: pd.Series(summary).to_json(path, indent=2)
        )
        print(format_summary(table, config.eval.final_split))
    return summary


def write_embeddings(embeddings: np.ndarray, index: pd.DataFrame, path: epath.Path) -> None:
    """``sample_id, latent_0 ... latent_{D-1}`` (the ml4h column names) plus ``patient_id``."""
    frame = pd.DataFrame(embeddings, columns=[f"latent_{i}" for i in range(embeddings.shape[1])])
    frame.insert(0, "patient_id", index["patient_id"].to_numpy())
    frame.insert(0, "sample_id", index["record_id"].to_numpy())
    write_through_local_file(path, lambda local: frame.to_parquet(local, index=False))


def format_summary(table: pd.DataFrame, split: str) -> str:
    versus = " vs random initialisation" if "random_init" in table else ""
    lines = [f"\nEvaluation on held-out patients ({split} split): PCLR{versus}"]
    lines.append(f"{'metric':<26}" + "".join(f"{name:>14}" for name in table.columns))
    for metric, row in table.iterrows():
        lines.append(f"{metric:<26}" + "".join(f"{value:>14.3f}" for value in row))
    return "\n".join(lines)
