"""Probe metrics with percentile-bootstrap confidence intervals over test patients.

Point estimates come from ``sklearn.metrics``. Bootstrap replicates are evaluated all at once: a
resample of the test set is a vector of multiplicities (how often each test row was drawn), so
each metric is computed as its sample-weighted form over a ``(replicates, n_test)`` weight matrix
with one sort of the scores. ``tests/test_probe.py`` checks that form against ``sklearn.metrics``
with ``sample_weight``.

The resamples draw patients, not ECGs, stratified so that every scored class keeps positives and
negatives in every resample (``pclr_jax.evaluation.resampling``): a macro average is over the same
classes in every resample as in the point estimate, and the point lies inside its interval.

Metrics per task kind: binary -> AUROC, AUPRC (average precision); multiclass and multilabel ->
macro AUROC and macro AUPRC over the classes that have positives and negatives in the test set;
regression -> R^2 and MAE.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from pclr_jax.evaluation.resampling import resampling_plan

METRICS = {
    "binary": ("auroc", "auprc"),
    "multiclass": ("auroc", "auprc"),
    "multilabel": ("auroc", "auprc"),
    "regression": ("r2", "mae"),
}
# Bootstrap weight matrices are processed in chunks of about this many elements.
_CHUNK_ELEMENTS = 2**22


def _value_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending sort order of ``scores`` and the start index of each run of equal values."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def weighted_auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of binary ``y`` (n,) for ``scores`` (n,) under each row of ``weights`` (B, n).

    Equal to ``roc_auc_score(y, scores, sample_weight=w)`` row by row (ties count one half);
    NaN where a row gives no weight to one class.
    """
    order, starts = _value_groups(scores)
    positive = y[order].astype(bool)
    w = weights[:, order]
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    return np.divide(numerator, denominator, out=np.full(len(w), np.nan), where=denominator > 0)


def weighted_average_precision(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision (sklearn's step-wise AUPRC) of binary ``y`` under each row of ``weights``.

    Equal to ``average_precision_score(y, scores, sample_weight=w)``; NaN where a row gives no
    weight to the positives.
    """
    order, starts = _value_groups(scores)
    positive = y[order].astype(bool)
    w = weights[:, order]
    pos = np.add.reduceat(w * positive, starts, axis=1)[:, ::-1]
    neg = np.add.reduceat(w * ~positive, starts, axis=1)[:, ::-1]
    true_pos = np.cumsum(pos, axis=1)
    predicted = true_pos + np.cumsum(neg, axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    total = true_pos[:, -1]
    ap = (pos * precision).sum(axis=1)
    return np.divide(ap, total, out=np.full(len(w), np.nan), where=total > 0)


def weighted_r2(y: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``r2_score(y, predictions, sample_weight=w)`` for each row of ``weights`` (B, n)."""
    total = weights.sum(axis=1, keepdims=True)
    mean = (weights * y).sum(axis=1, keepdims=True) / total
    ss_res = (weights * (y - predictions) ** 2).sum(axis=1)
    ss_tot = (weights * (y - mean) ** 2).sum(axis=1)
    return np.divide(ss_tot - ss_res, ss_tot, out=np.full(len(weights), np.nan), where=ss_tot > 0)


def weighted_mae(y: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``mean_absolute_error(y, predictions, sample_weight=w)`` for each row of ``weights``."""
    return (weights * np.abs(y - predictions)).sum(axis=1) / weights.sum(axis=1)


def _macro(fn, y: np.ndarray, scores: np.ndarray, weights: np.ndarray, classes) -> np.ndarray:
    """The mean over ``classes`` of ``fn`` per row of ``weights``; NaN in a row where any class is
    undefined (an average over fewer classes would be another quantity)."""
    per_class = np.stack([fn(y[:, c], scores[:, c], weights) for c in classes], axis=1)
    return per_class.mean(axis=1)


def class_indicator(y: np.ndarray, kind: str, n_columns: int = 1) -> np.ndarray | None:
    """``(n, C)`` 0/1 class membership of encoded labels (binary: ``(n, 1)``, the positive
    class); ``None`` for regression."""
    if kind == "regression":
        return None
    if kind == "binary":
        return np.asarray(y, dtype=bool).reshape(-1, 1)
    return _indicator(y, kind, n_columns)


def _indicator(y: np.ndarray, kind: str, n_columns: int) -> np.ndarray:
    if kind == "multiclass":
        return np.eye(n_columns, dtype=bool)[y]
    return y.astype(bool)


def scored_classes(y: np.ndarray, kind: str, n_columns: int) -> np.ndarray:
    """Columns with both positives and negatives in ``y`` (multiclass/multilabel macro averages)."""
    indicator = _indicator(y, kind, n_columns)
    counts = indicator.sum(axis=0)
    return np.flatnonzero((counts > 0) & (counts < len(y)))


def point_metrics(y: np.ndarray, scores: np.ndarray, kind: str) -> dict[str, float]:
    """Metrics of one prediction with ``sklearn.metrics``.

    Args:
        y: binary (n,) in {0, 1}; multiclass (n,) class index; multilabel (n, C) in {0, 1};
            regression (n,) float.
        scores: binary (n,) score of class 1; multiclass/multilabel (n, C); regression (n,).
    """
    if kind == "binary":
        return {
            "auroc": float(skm.roc_auc_score(y, scores)),
            "auprc": float(skm.average_precision_score(y, scores)),
        }
    if kind in ("multiclass", "multilabel"):
        columns = scored_classes(y, kind, scores.shape[1])
        indicator = _indicator(y, kind, scores.shape[1])[:, columns]
        return {
            "auroc": float(skm.roc_auc_score(indicator, scores[:, columns], average="macro")),
            "auprc": float(
                skm.average_precision_score(indicator, scores[:, columns], average="macro")
            ),
        }
    if kind == "regression":
        return {
            "r2": float(skm.r2_score(y, scores)),
            "mae": float(skm.mean_absolute_error(y, scores)),
        }
    raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(METRICS)}")


def weighted_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    kind: str,
    weights: np.ndarray,
    names: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """The metrics of ``point_metrics`` under each row of ``weights`` (B, n): ``{name: (B,)}``;
    ``names``: only these (default all of the kind's)."""
    if kind not in METRICS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(METRICS)}")
    names = METRICS[kind] if names is None else names
    if kind == "binary":
        functions = {"auroc": weighted_auroc, "auprc": weighted_average_precision}
        return {name: functions[name](y, scores, weights) for name in names}
    if kind in ("multiclass", "multilabel"):
        indicator = _indicator(y, kind, scores.shape[1])
        columns = scored_classes(y, kind, scores.shape[1])
        functions = {"auroc": weighted_auroc, "auprc": weighted_average_precision}
        return {
            name: _macro(functions[name], indicator, scores, weights, columns) for name in names
        }
    functions = {"r2": weighted_r2, "mae": weighted_mae}
    return {name: functions[name](y, scores, weights) for name in names}


def bootstrap_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    kind: str,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap ``(low, high)`` interval of each metric over resamples of the test
    patients (``groups``: ``(n,)`` patient ids; ``None``: each row is a patient), stratified so
    that every scored class keeps positives and negatives (``resampling.resampling_plan``).

    Resamples in which a metric is undefined (a regression test set with one distinct value) are
    left out of its interval.
    """
    n = len(y)
    n_columns = scores.shape[1] if np.ndim(scores) == 2 else 1
    plan = resampling_plan(groups, class_indicator(y, kind, n_columns), n_rows=n)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in METRICS[kind]}
    for start in range(0, n_bootstrap, chunk):
        weights = plan.weights(rng, min(chunk, n_bootstrap - start))
        for name, values in weighted_metrics(y, scores, kind, weights).items():
            replicates[name].append(values)
    tail = 100 * (1 - ci) / 2
    intervals = {}
    for name, chunks in replicates.items():
        values = np.concatenate(chunks)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
        intervals[name] = (float(low), float(high))
    return intervals


def interval_note(
    y: np.ndarray,
    kind: str,
    n_columns: int = 1,
    groups: np.ndarray | None = None,
    class_names=None,
) -> str:
    """What a bootstrap interval of these test labels cannot cover, in words ('' if nothing):
    classes left out of a macro average because the test rows hold no positive or no negative,
    and classes with a single positive or negative patient (fixed in every resample, see
    ``resampling``). ``class_names``: names of the ``n_columns`` classes (default: indices)."""
    indicator = class_indicator(y, kind, n_columns)
    if indicator is None:
        return ""
    names = [str(c) for c in (range(indicator.shape[1]) if class_names is None else class_names)]
    notes = []
    if kind != "binary":
        scored = set(scored_classes(y, kind, n_columns).tolist())
        absent = [names[c] for c in range(indicator.shape[1]) if c not in scored]
        if absent:
            notes.append(
                f"not in the macro average (no positive or no negative test ECG): "
                f"{', '.join(absent)}"
            )
    thin = resampling_plan(groups, indicator).thin_classes
    if thin:
        notes.append(
            "a single positive or negative test patient, kept in every resample (its noise is "
            f"not in the interval): {', '.join(names[c] for c in thin)}"
        )
    return "; ".join(notes)
