"""PCLR pretraining: config, mesh, data, state, steps, checkpoints, evaluation, export.

Everything a run writes lives in ``workdir``:

* ``checkpoints/<step>/``: Orbax checkpoints (train state, loader state, config);
* ``metrics.jsonl``, ``tensorboard/``, ``curves.png``: training and evaluation metrics;
* ``encoder/`` (Orbax) and ``encoder.h5`` (Keras): the trained encoder, with its projection head;
* ``embeddings_<split>.parquet``: the evaluation split's embeddings (``sample_id, latent_*``);
* ``summary.json``: the final evaluation beside a randomly initialised encoder.

A run started on a workdir that holds a checkpoint resumes from it, on exactly the next batch.
SIGTERM or SIGINT saves a checkpoint and exits cleanly; a non-finite loss stops the run with
``NonFiniteLossError`` and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import logging
import math
import pathlib
import signal
import time

import jax
import ml_collections
import numpy as np
import pandas as pd
import tqdm

from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch
from pclr_jax.data.prepared import load_prepared
from pclr_jax.distributed import make_mesh, maybe_initialize_distributed
from pclr_jax.encoder_checkpoint import save_encoder
from pclr_jax.keras_export import write_keras_h5
from pclr_jax.losses import get_loss
from pclr_jax.model import EncoderConfig, init_variables
from pclr_jax.optimizers import make_optimizer
from pclr_jax.train_state import create_train_state
from pclr_jax.train_step import make_embed_fn, make_train_step
from pclr_jax.training import checkpointing
from pclr_jax.training.data_setup import ensure_prepared
from pclr_jax.training.evaluation import (
    ProbeTask,
    embed_split,
    probe_between,
    probe_within_split,
    retrieval_metrics,
)
from pclr_jax.training.metric_log import MetricLog, plot_curves

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def encoder_variables(state) -> dict:
    """The encoder's ``{'params', 'batch_stats'}`` out of a train state (head included)."""
    return {"params": state.params["model"], "batch_stats": state.batch_stats}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Runs (or resumes) a pretraining run; returns the final summary (also in summary.json)."""
    maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
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
    loader = make_pair_loader(
        train_split,
        PairLoaderConfig(
            batch_pairs=config.batch_pairs,
            seed=config.seed,
            single_ecg_patients=config.loader.single_ecg_patients,
            augmentations=config.loader.augment.to_dict(),
            worker_count=config.loader.worker_count,
        ),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    optimizer, schedule = make_optimizer(config.optimizer, config.batch_pairs, config.total_steps)
    loss_hparams = config.loss.hparams.to_dict()
    loss = get_loss(config.loss.name, axis_name="data", **loss_hparams)
    state = create_train_state(model_config, loss, optimizer, jax.random.key(config.seed), mesh)
    train_step = make_train_step(
        model_config,
        config.loss.name,
        loss_hparams,
        optimizer,
        mesh,
        sync_batch_norm=config.sync_batch_norm,
        grad_cache_microbatch=config.grad_cache_microbatch,
    )
    embed_fn = make_embed_fn(model_config, mesh)
    tasks = [ProbeTask.parse(spec) for spec in config.eval.probe_tasks]

    manager = checkpointing.make_checkpoint_manager(
        workdir, config.checkpoint.keep, config.checkpoint.keep_best
    )
    restored = checkpointing.restore_latest(manager, state, loader)
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
        checkpointing.save_checkpoint(
            manager, step, state, loader, config.to_dict(), metrics=metrics
        )

    ecgs_per_step = 2 * config.batch_pairs
    step = start_step
    with (
        _StopRequest() as stop,
        tqdm.tqdm(
            total=config.total_steps, initial=start_step, disable=not is_main, unit="step"
        ) as progress,
    ):
        tick = time.perf_counter()
        while step < config.total_steps:
            batch = to_global_batch(next(loader), mesh)
            state, metrics = train_step(state, batch)
            step += 1
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics["loss"]):
                manager.wait_until_finished()
                raise NonFiniteLossError(
                    f"loss is {metrics['loss']} at step {step}; the last good checkpoint "
                    f"(step {manager.latest_step()}) in {workdir / 'checkpoints'} is intact"
                )
            now = time.perf_counter()
            step_time, tick = now - tick, now
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % config.log_every_steps == 0 or step == config.total_steps:
                metrics.update(step_time_s=step_time, ecg_per_s=ecgs_per_step / step_time)
                metric_log.write(step, "train", metrics)
            eval_metrics = None
            if step % config.eval.every_steps == 0 or step == config.total_steps:
                eval_metrics = evaluate(step)
                tick = time.perf_counter()
            if eval_metrics is not None or step % config.checkpoint.every_steps == 0:
                save(step, eval_metrics)
            if stop.signal_name is not None:
                log.warning("%s received: saving step %d and stopping", stop.signal_name, step)
                save(step)
                manager.wait_until_finished()
                metric_log.close()
                return {"stopped_by": stop.signal_name, "step": step}
    manager.wait_until_finished()

    summary = final_report(config, model_config, state, embed_fn, workdir, tasks)
    if is_main:
        plot_curves(metric_log.path, workdir / "curves.png")
        export_encoder(model_config, state, workdir)
    metric_log.close()
    return summary


def export_encoder(model_config: EncoderConfig, state, workdir: pathlib.Path) -> None:
    """Writes the trained encoder (with head) as an Orbax directory and as a Keras ``.h5``."""
    variables = jax.device_get(encoder_variables(state))
    save_encoder(
        workdir / "encoder", model_config, variables, {"step": int(state.step)}, overwrite=True
    )
    write_keras_h5(workdir / "encoder.h5", model_config, variables)


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
        pd.Series(summary).to_json(workdir / "summary.json", indent=2)
        print(format_summary(table, config.eval.final_split))
    return summary


def write_embeddings(embeddings: np.ndarray, index: pd.DataFrame, path: pathlib.Path) -> None:
    """``sample_id, latent_0 ... latent_{D-1}`` (the ml4h column names) plus ``patient_id``."""
    frame = pd.DataFrame(embeddings, columns=[f"latent_{i}" for i in range(embeddings.shape[1])])
    frame.insert(0, "patient_id", index["patient_id"].to_numpy())
    frame.insert(0, "sample_id", index["record_id"].to_numpy())
    frame.to_parquet(path, index=False)


def format_summary(table: pd.DataFrame, split: str) -> str:
    versus = " vs random initialisation" if "random_init" in table else ""
    lines = [f"\nEvaluation on held-out patients ({split} split): PCLR{versus}"]
    lines.append(f"{'metric':<26}" + "".join(f"{name:>14}" for name in table.columns))
    for metric, row in table.iterrows():
        lines.append(f"{metric:<26}" + "".join(f"{value:>14.3f}" for value in row))
    return "\n".join(lines)
