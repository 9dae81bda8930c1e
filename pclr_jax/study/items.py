"""Per-test-item results of a cell (``items.npz``): what the report needs to put the test set's
own noise into a study's intervals.

A cell's metrics are averages over the test split: retrieval top-k over its queries, a probe's
AUROC or R^2 over its labelled ECGs (averaged over the label draws). Resampling the test patients
and recomputing each metric from these items gives the metric's test-set noise
(``two_source``). The file holds, for the cell's test split of ``N`` ECGs:

* ``patient_id``: ``(N,)`` str, the patient of each test ECG;
* per retrieval metric (``retrieval_top1``): ``<metric>.rows`` ``(Q,)`` the query rows (into the
  test split) and ``<metric>.hits`` ``(Q,)`` each query's expected hit in [0, 1]; the metric is
  their mean;
* per probe metric (``sex_auroc@100``): ``<metric>.rows`` ``(M,)`` the test rows with a known
  label, ``<metric>.y`` the encoded labels (``(M,)``, or ``(M, C)`` multi-label),
  ``<metric>.scores`` ``(R, M)`` or ``(R, M, C)`` float32, the probe's scores at each of its R
  label draws, and ``<metric>.kind`` (binary, multiclass, multilabel, regression); the metric is
  the mean over the draws of the primary metric (AUROC, R^2).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from pclr_jax.evaluation import metrics as evaluation_metrics
from pclr_jax.evaluation.probe import PRIMARY_METRIC

ITEMS = "items.npz"
RETRIEVAL = "retrieval"


@dataclasses.dataclass(frozen=True)
class MetricItems:
    """One metric's items in one cell (see the module docstring).

    ``kind``: ``"retrieval"`` or a probe's task kind; ``values``: retrieval hits ``(M,)`` or probe
    scores ``(R, M[, C])``; ``y``: probe labels (``None`` for retrieval).
    """

    rows: np.ndarray
    kind: str
    values: np.ndarray
    y: np.ndarray | None = None

    def labels_for_strata(self) -> np.ndarray | None:
        """``(M, C)`` class membership to stratify the patient resampling on (``None``: none)."""
        if self.kind == RETRIEVAL:
            return None
        n_columns = self.values.shape[-1] if self.values.ndim == 3 else 1
        return evaluation_metrics.class_indicator(self.y, self.kind, n_columns)

    def value(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of ``weights`` ``(B, M)`` (row weights): ``(B,)``."""
        if self.kind == RETRIEVAL:
            return weights @ self.values / weights.sum(axis=1)
        name = PRIMARY_METRIC[self.kind]
        per_draw = [
            evaluation_metrics.weighted_metrics(
                self.y, scores.astype(np.float64), self.kind, weights, (name,)
            )[name]
            for scores in self.values
        ]
        return np.mean(per_draw, axis=0)


@dataclasses.dataclass(frozen=True)
class CellItems:
    """A cell's ``items.npz``: ``patient_id`` ``(N,)`` of the test split, ``metrics`` by name."""

    patient_id: np.ndarray
    metrics: dict[str, MetricItems]


def retrieval_arrays(result: dict) -> dict[str, np.ndarray]:
    """The ``items.npz`` entries of a ``retrieval_accuracy`` result over the test split."""
    arrays = {}
    for key in [k for k in result if k.startswith("hits_top")]:
        name = key.replace("hits_", "retrieval_")
        arrays[f"{name}.rows"] = np.asarray(result["query_rows"], np.int64)
        arrays[f"{name}.hits"] = np.asarray(result[key], np.float64)
    return arrays


def probe_arrays(
    metric: str, kind: str, rows: np.ndarray, y: np.ndarray, scores: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """The ``items.npz`` entries of one probe metric: test ``rows`` ``(M,)``, labels ``y`` and the
    scores of each label draw (each ``(M,)`` or ``(M, C)``)."""
    return {
        f"{metric}.rows": np.asarray(rows, np.int64),
        f"{metric}.y": np.asarray(y),
        f"{metric}.scores": np.stack(scores).astype(np.float32),
        f"{metric}.kind": np.array(kind),
    }


def write_items(directory: pathlib.Path, patient_id, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``items.npz`` (compressed) atomically."""
    temporary = directory / f".{ITEMS}.{os.getpid()}.tmp.npz"
    np.savez_compressed(temporary, patient_id=np.asarray(patient_id).astype(str), **arrays)
    os.replace(temporary, directory / ITEMS)


def read_items(directory: pathlib.Path) -> CellItems | None:
    """A cell's items, or ``None`` when it recorded none (cells run before they were kept)."""
    path = pathlib.Path(directory) / ITEMS
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    names = sorted({key.rpartition(".")[0] for key in arrays if "." in key})
    parsed = {}
    for name in names:
        if f"{name}.hits" in arrays:
            parsed[name] = MetricItems(arrays[f"{name}.rows"], RETRIEVAL, arrays[f"{name}.hits"])
        else:
            parsed[name] = MetricItems(
                arrays[f"{name}.rows"],
                str(arrays[f"{name}.kind"]),
                arrays[f"{name}.scores"],
                arrays[f"{name}.y"],
            )
    return CellItems(arrays["patient_id"], parsed)
