"""Evaluation of an encoder in training: embed a split, retrieve patients, probe labels.

Embeddings are ``(N, embed_dim)`` float32 in the split's index order. Probe tasks are strings
``"column:binary"``, ``"column:multiclass"`` or ``"column:regression"``; rows whose label is
unknown (NaN, or -1 for categorical labels) are left out of that task and counted.
"""

from __future__ import annotations

import dataclasses

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
    """Embeds every ECG of a prepared split, in index order: ``(len(prepared.index), D)``."""
    chunks = []
    for batch in iter_eval_batches(prepared, batch_size):
        embeddings = np.asarray(embed_fn(variables, batch["ecg"]))
        chunks.append(embeddings[batch["mask"]])
    return np.concatenate(chunks, axis=0)


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
