"""One cell of a study (an arm at a seed): train, evaluate, record.

A cell lives in ``<study>/cells/<arm>/seed_<seed>/``:

* ``config.json``: the resolved training config of the cell (base, the arm's overrides, seed),
  written before training;
* ``train/``: the training workdir (``train_and_evaluate``: checkpoints, metrics, encoder);
* ``items.npz``: the per-test-item results behind the metrics (``pclr_jax.study.items``: each
  retrieval query's hit, each probe's scores on the test ECGs, the test patients);
* ``result.json``: written last, atomically, when the cell is complete: its metrics, the budget
  it actually spent, wall times. A cell with ``result.json`` is never redone;
* ``failed.json``: the error of a cell that could not finish (e.g. out of memory, a non-finite
  loss); the study goes on with the other cells and the report lists it.

An interrupted cell resumes from its training checkpoint (exactly, on the next batch).

Beside the arms, each seed has a baseline cell, ``cells/random_init/seed_<seed>/``
(:data:`BASELINE_ARM`): the base config's encoder with the weights every run at that seed starts
from (the same key as training's initialisation), evaluated the same way without training. Its
``result.json`` has the same fields, with ``steps`` 0 and ``train_wall_s`` 0; it writes
``encoder/`` (no ``train/``). The report shows it beside the arms, for scale, and compares no arm
with it.

The evaluation embeds ``evaluation.fit_split`` and ``evaluation.test_split`` with the trained
encoder, measures patient retrieval top-1/top-5 among the test ECGs, and fits linear probes on
``label_sizes`` training ECGs of the fit split (``repeats`` random draws below "all", seeded by
the cell's seed: matched seeds of two arms draw the same rows), scored on the test split.
Metrics are named ``retrieval_top1``, ``retrieval_top5`` and ``<task>_<auroc|r2>@<size>``.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

BASELINE_ARM = "random_init"
RESULT = "result.json"
FAILED = "failed.json"
CONFIG = "config.json"


def cell_directory(study_dir: str | os.PathLike, arm: str, seed: int) -> pathlib.Path:
    return pathlib.Path(study_dir) / "cells" / arm / f"seed_{seed}"


def write_json_atomically(path: pathlib.Path, payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` to a temporary file and renames it: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_result(directory: pathlib.Path) -> dict | None:
    path = directory / RESULT
    return json.loads(path.read_text()) if path.exists() else None


def read_config(directory: pathlib.Path) -> dict | None:
    """The cell's resolved config as written before training (``None`` for cells run before
    configs were recorded)."""
    path = directory / CONFIG
    return json.loads(path.read_text()) if path.exists() else None


def latest_checkpoint_step(train_dir: pathlib.Path) -> int:
    """The newest checkpoint step in a training workdir (0 if none)."""
    directory = train_dir / "checkpoints"
    if not directory.is_dir():
        return 0
    return max((int(p.name) for p in directory.iterdir() if p.name.isdigit()), default=0)


def run_cell(spec, arm: str, seed: int, study_dir: str | os.PathLike) -> dict:
    """Trains (or resumes) and evaluates one cell; returns its result (also ``result.json``).

    Returns ``{"stopped_by": SIGNAL}`` if training was stopped by SIGTERM/SIGINT (checkpoint
    saved, no result written). Exceptions propagate (the caller records them).
    """
    from pclr_jax.training.loop import train_and_evaluate

    directory = cell_directory(study_dir, arm, seed)
    train_dir = directory / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    config = spec.cell_config(arm, seed)
    write_json_atomically(directory / CONFIG, json.loads(config.to_json_best_effort()))
    resumed_from = latest_checkpoint_step(train_dir)
    start = time.perf_counter()
    summary = train_and_evaluate(config, train_dir)
    if "stopped_by" in summary:
        return summary
    train_seconds = time.perf_counter() - start
    return _evaluate_and_record(
        directory,
        train_dir / "encoder",
        config,
        spec.evaluation,
        arm,
        seed,
        steps=int(summary["step"]),
        train_seconds=train_seconds,
        resumed_from=resumed_from,
    )


def run_baseline_cell(spec, seed: int, study_dir: str | os.PathLike) -> dict:
    """Evaluates the untrained encoder of ``seed`` (module docstring) into
    ``cells/random_init/seed_<seed>/``; returns its result (also ``result.json``)."""
    from pclr_jax.training.initial_encoder import export_initial_encoder

    directory = cell_directory(study_dir, BASELINE_ARM, seed)
    directory.mkdir(parents=True, exist_ok=True)
    config = spec.cell_config(None, seed)
    config.total_steps = 0
    write_json_atomically(directory / CONFIG, json.loads(config.to_json_best_effort()))
    export_initial_encoder(config, directory / "encoder")
    return _evaluate_and_record(
        directory,
        directory / "encoder",
        config,
        spec.evaluation,
        BASELINE_ARM,
        seed,
        steps=0,
        train_seconds=0.0,
        resumed_from=0,
    )


def _evaluate_and_record(
    directory: pathlib.Path,
    encoder_dir: pathlib.Path,
    config,
    evaluation: Mapping[str, Any],
    arm: str,
    seed: int,
    *,
    steps: int,
    train_seconds: float,
    resumed_from: int,
) -> dict:
    """Evaluates the encoder in ``encoder_dir``, writes the cell's ``items.npz`` and then its
    ``result.json`` (last, atomically), and returns the result."""
    import jax

    from pclr_jax.benchmarking.report import machine_facts
    from pclr_jax.study.items import write_items

    start = time.perf_counter()
    items: dict = {}
    metrics, skipped = evaluate_encoder(encoder_dir, config, evaluation, seed, items=items)
    write_items(directory, items.pop("patient_id"), items)
    result = {
        "arm": arm,
        "seed": seed,
        "metrics": metrics,
        "budget": {
            "data": f"{config.data.name}/{config.data.config}:{config.data.train_split}",
            "steps": steps,
            "batch_pairs": int(config.batch_pairs),
            "ecgs_seen": 2 * int(config.batch_pairs) * steps,
            "model_input": f"{config.model.n_samples}x{config.model.n_leads}",
        },
        "probe_skipped": skipped,
        "resumed_from_step": resumed_from,
        "train_wall_s": round(train_seconds, 1),
        "eval_wall_s": round(time.perf_counter() - start, 1),
        # Host facts with the load average at the end of the cell, the backend it ran on and
        # what the model's "auto" formulations resolved to there.
        "machine": {
            **machine_facts(),
            "jax_backend": jax.default_backend(),
            "formulations": resolved_formulations(config.model),
        },
    }
    write_json_atomically(directory / RESULT, result)
    (directory / FAILED).unlink(missing_ok=True)
    return result


def resolved_formulations(model) -> dict[str, str]:
    """The convolution and batch-norm formulations a model config runs with in this process
    (``"auto"`` resolved for this backend, CPU class and dtype): ``{"conv_impl_training",
    "conv_impl_inference", "norm_impl"}``. They change float rounding only, but a study whose
    cells ran on different machines may have trained with different ones."""
    from pclr_jax.model import batch_norm, conv

    return {
        "conv_impl_training": conv.resolve_impl(model.conv_impl, True, dtype=model.dtype),
        "conv_impl_inference": conv.resolve_impl(model.conv_impl, False, dtype=model.dtype),
        "norm_impl": batch_norm.resolve_impl(model.norm_impl),
    }


def record_failure(study_dir, arm: str, seed: int, error: BaseException) -> None:
    """Writes ``failed.json`` with the error and its traceback."""
    directory = cell_directory(study_dir, arm, seed)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(
        directory / FAILED,
        {
            "arm": arm,
            "seed": seed,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exception(error)[-5:],
        },
    )


def embed_prepared(encoder, prepared, batch_size: int) -> np.ndarray:
    """``(len(prepared.index), D)`` embeddings of a prepared split, in index order, streamed."""
    from pclr_jax.data.loader import iter_eval_batches

    chunks = [
        encoder.embed(batch["ecg"])[batch["mask"]]
        for batch in iter_eval_batches(prepared, batch_size)
    ]
    return np.concatenate(chunks, axis=0)


def evaluate_encoder(
    encoder_dir, config, evaluation: Mapping[str, Any], seed: int, items: dict | None = None
) -> tuple[dict[str, float], list[str]]:
    """Retrieval and probe metrics of a trained encoder (see the module docstring), and the
    probe fits that could not be made, with their reasons (e.g. a single class in the test
    split). ``items``, when given, receives the ``items.npz`` arrays (``pclr_jax.study.items``)
    and ``patient_id``."""
    from pclr_jax.data.prepared import load_prepared
    from pclr_jax.embedding.embedder import load_encoder
    from pclr_jax.evaluation import learning_curve
    from pclr_jax.evaluation.inputs import task_labels
    from pclr_jax.evaluation.retrieval import retrieval_accuracy
    from pclr_jax.study.items import probe_arrays, retrieval_arrays

    batch_size = int(config.eval.batch_size)
    encoder = load_encoder(encoder_dir, output="embed", batch_size=batch_size)
    splits = {
        role: load_prepared(
            config.data.name, evaluation[role], config.data.data_dir, config.data.config
        )
        for role in ("fit_split", "test_split")
    }
    features = {role: embed_prepared(encoder, s, batch_size) for role, s in splits.items()}
    test_index = splits["test_split"].index.reset_index(drop=True)
    groups = test_index["ecg_group"].to_numpy() if "ecg_group" in test_index else None
    retrieval = retrieval_accuracy(
        features["test_split"], test_index["patient_id"].to_numpy(), (1, 5), groups
    )
    metrics = {f"retrieval_top{k}": float(retrieval[f"retrieval_top{k}"]) for k in (1, 5)}
    if items is not None:
        items["patient_id"] = test_index["patient_id"].to_numpy()
        items.update(retrieval_arrays(retrieval))

    table = pd.concat([splits["fit_split"].index, test_index], ignore_index=True).reset_index(
        drop=True
    )
    all_features = np.concatenate([features["fit_split"], features["test_split"]])
    n_fit = len(splits["fit_split"].index)
    is_test = np.arange(len(table)) >= n_fit
    sizes = list(evaluation["label_sizes"])
    skipped = []
    for spec in evaluation["tasks"]:
        task, rows, y, classes = task_labels(table, spec)
        test_rows = np.flatnonzero(is_test[rows])
        # Draws below "all" are repeated; "all" is one fit (every draw would be the same rows).
        for part_sizes, repeats in (
            ([s for s in sizes if s != "all"], int(evaluation["repeats"])),
            ([s for s in sizes if s == "all"], 1),
        ):
            if not part_sizes:
                continue
            curve = learning_curve(
                {"encoder": all_features[rows]},
                y,
                table["patient_id"].to_numpy()[rows],
                task.kind,
                task_name=task.column,
                n_outputs=max(len(classes), 1),
                sizes=part_sizes,
                repeats=repeats,
                test_rows=test_rows,
                n_bootstrap=0,
                seed=seed,
                keep_scores=items is not None,
            )
            skipped += sorted(
                {f"{r.task}@{r.size_label}: {r.reason}" for r in curve.skipped.itertuples()}
            )
            primary = curve.results[curve.results["metric"] == task.metric]
            for label, values in primary.groupby("size_label"):
                name = f"{task.column}_{task.metric}@{label}"
                metrics[name] = float(values["value"].mean())
                if items is not None:
                    fits = [s for s in curve.scores if s.size_label == label]
                    items.update(
                        probe_arrays(
                            name,
                            task.kind,
                            rows[test_rows] - n_fit,
                            y[test_rows],
                            [fit.scores for fit in fits],
                        )
                    )
    return metrics, skipped
