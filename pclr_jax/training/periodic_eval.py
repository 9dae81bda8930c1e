"""Evaluation of an encoder in training: embed a split, retrieve patients, probe labels.

Embeddings are ``(N, embed_dim)`` float32 in the split's index order. Probe tasks are strings
``"column:binary"``, ``"column:multiclass"`` or ``"column:regression"``; rows whose label is
unknown (NaN, or -1 for categorical labels) are left out of that task and counted.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from pclr_jax.data.loader import iter_eval_batches
from pclr_jax.evaluation import ProbeError, linear_probe, retrieval_accuracy

PRIMARY_METRIC = {"binary": "auroc", "multiclass": "auroc", "regression": "r2"}


@dataclasses.dataclass(frozen=True)
class ProbeTask:
    column: str
    kind: str

    @classmethod
    def parse(cls, spec: str) -> ProbeTask:
        column, _, kind = spec.partition(":")
        kind = kind or "binary"
        if kind not in PRIMARY_METRIC:
            raise ValueError(f"probe task {spec!r}: kind must be one of {sorted(PRIMARY_METRIC)}")
        return cls(column, kind)

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    def known(self, labels: pd.Series) -> np.ndarray:
        """Boolean mask of rows whose label is known."""
        values = labels.to_numpy(dtype=np.float64)
        if self.kind == "regression":
            return np.isfinite(values)
        return np.isfinite(values) & (values >= 0)


def embed_split(embed_fn, variables: dict, prepared, batch_size: int) -> np.ndarray:
    """Embeds every ECG of a prepared split, in index order: ``(len(prepared.index), D)`` float32,
    on every process.

    ``embed_fn``: :func:`pclr_jax.step.train_step.make_local_embed_fn`'s. Each process reads only
    its share of every global batch of ``batch_size`` ECGs (rounded up to a multiple of the
    device count; :func:`pclr_jax.data.loader.iter_eval_batches`), in its stored dtype; the
    devices embed the global batch; each process keeps its own rows, and one
    ``process_allgather`` at the end gives every process all of them. (Before, every process read
    and decoded the whole split: 80 GB per host for MIMIC-IV-ECG's training split.)
    """
    devices, process, processes = jax.device_count(), jax.process_index(), jax.process_count()
    batch_size = -(-batch_size // devices) * devices
    batches = iter_eval_batches(
        prepared, batch_size, process_index=process, process_count=processes, dtype=None
    )
    outputs = [embed_fn(variables, batch["ecg"]) for batch in batches]
    local = np.concatenate([_own_rows(out) for out in outputs])  # (batches * B / P, D)
    if processes > 1:
        from jax.experimental import multihost_utils

        shares = np.asarray(multihost_utils.process_allgather(local))  # (P, batches * B / P, D)
        local = shares.reshape(processes, len(outputs), -1, local.shape[-1]).swapaxes(0, 1)
    return local.reshape(-1, local.shape[-1])[: len(prepared.index)]


def _own_rows(embeddings: jax.Array) -> np.ndarray:
    """This process's rows of a global ``(B, D)`` array sharded by rows, in row order."""
    shards = sorted(embeddings.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])


def retrieval_metrics(embeddings: np.ndarray, index: pd.DataFrame) -> dict[str, float]:
    """Top-1/top-5 patient retrieval and their chance levels (see ``retrieval_accuracy``)."""
    groups = index["ecg_group"].to_numpy() if "ecg_group" in index else None
    result = retrieval_accuracy(embeddings, index["patient_id"].to_numpy(), (1, 5), groups)
    return {k: float(v) for k, v in result.items() if np.isscalar(v)}


def probe_within_split(
    embeddings: np.ndarray, index: pd.DataFrame, tasks: list[ProbeTask], seed: int
) -> dict[str, float]:
    """Quick linear probes: half of the split's patients fit, the other half score."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    fit_rows, score_rows = next(splitter.split(embeddings, groups=index["patient_id"].to_numpy()))
    return probe_between(
        embeddings[fit_rows],
        index.iloc[fit_rows],
        embeddings[score_rows],
        index.iloc[score_rows],
        tasks,
    )


def probe_between(
    fit_x: np.ndarray,
    fit_index: pd.DataFrame,
    score_x: np.ndarray,
    score_index: pd.DataFrame,
    tasks: list[ProbeTask],
) -> dict[str, float]:
    """Fits one linear probe per task on ``fit_*`` and scores it on ``score_*``.

    Returns ``{"<column>_<metric>": value}``; a task whose labels are missing from the index, or
    whose classes are too rare to fit (``ProbeError``), is reported as NaN rather than dropped.
    The probe's cross-validation folds keep each patient on one side.
    """
    results = {}
    for task in tasks:
        key = f"{task.column}_{task.metric}"
        if task.column not in fit_index or task.column not in score_index:
            results[key] = float("nan")
            continue
        fit_known = task.known(fit_index[task.column])
        score_known = task.known(score_index[task.column])
        fit_y = fit_index[task.column].to_numpy()[fit_known]
        score_y = score_index[task.column].to_numpy()[score_known]
        if task.kind != "regression" and (len(np.unique(fit_y)) < 2 or len(np.unique(score_y)) < 2):
            results[key] = float("nan")
            continue
        try:
            scores = linear_probe(
                fit_x[fit_known],
                fit_y,
                score_x[score_known],
                score_y,
                task=task.kind,
                train_groups=fit_index["patient_id"].to_numpy()[fit_known],
                cv=3,
            )
        except ProbeError:
            results[key] = float("nan")
            continue
        results[key] = float(scores[task.metric])
    return results
