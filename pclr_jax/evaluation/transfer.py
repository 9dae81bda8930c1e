"""Transfer of several encoders to one set of real ECGs, side by side: patient retrieval and
linear probes of each encoder's embeddings of the same ECGs, with the same splits for every
encoder, so that differences between encoders are paired.

``transfer_evaluation`` takes ``sources`` (name -> ``(N, D)`` embeddings of the same N ECGs, in
the same order, e.g. ``random_init`` and one encoder per synthetic training config) and a table
of the N ECGs (``patient_id`` and label columns) and returns one long table:

* ``retrieval_top{k}``: :func:`~pclr_jax.evaluation.retrieval.retrieval_accuracy` among all N ECGs
  (queries: ECGs of patients with two or more), with the patient bootstrap interval of
  :func:`~pclr_jax.evaluation.retrieval.retrieval_intervals`; and for every source beside the
  ``reference``, the paired difference ``source - reference`` with a bootstrap interval over the
  same resampled patients (:func:`paired_retrieval_difference`).
* ``{task}_{metric}@{size}``: :func:`~pclr_jax.evaluation.probe.learning_curve` (patient-disjoint
  test set per repeat, nested training subsets, the same rows for every source). ``value`` is the
  mean over repeats, ``sd`` the standard deviation over repeats, ``ci_low``/``ci_high`` the means
  over repeats of each repeat's patient bootstrap bounds; ``diff`` and ``diff_sd`` are the mean and
  standard deviation over repeats of the paired difference to the ``reference`` (same split, same
  training rows).

With several training seeds per encoder (``scripts/calibrate_transfer.py --seeds``),
:func:`transfer_items` keeps what each value is computed from (every query's hit, every probe
repeat's test rows and scores) and :func:`common_deviations` recomputes every (encoder, seed) cell
under one common set of patient resamples, so that the scripts can put both the training seeds and
the real test set into one interval (``pclr_jax.study.two_source``).

The ECGs should hold one copy per recording (:func:`one_copy_per_recording`): a second copy of a
recording would be retrieved as "another ECG of the patient".
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pclr_jax.evaluation.metrics import class_indicator, weighted_metrics
from pclr_jax.evaluation.probe import (
    PRIMARY_METRIC,
    TaskSpec,
    encode_labels,
    known_labels,
    learning_curve,
)
from pclr_jax.evaluation.resampling import resampling_plan
from pclr_jax.evaluation.retrieval import retrieval_accuracy, retrieval_intervals

COLUMNS = (
    "source",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "sd",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "diff_sd",
    "n",
)


def one_copy_per_recording(
    table: pd.DataFrame, group_column: str = "ecg_group", rank_column: str | None = None
) -> pd.DataFrame:
    """The rows of ``table`` with one row per value of ``group_column`` (rows sharing it are copies
    of one recording): the row with the highest ``rank_column`` (e.g. ``sampling_rate``), then the
    first. Rows with a missing group are each their own recording. Keeps ``table``'s order and
    index."""
    groups = table[group_column]
    order = table.index.to_series()
    if rank_column is not None:
        order = (-table[rank_column].astype(float)).rank(method="first")
    keep = pd.Series(True, index=table.index)
    known = groups.notna()
    first = order[known].groupby(groups[known]).idxmin()
    keep[known] = table.index[known].isin(first.to_numpy())
    return table[keep]


def paired_retrieval_difference(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    query_patients: np.ndarray,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``hits_a - hits_b`` (per-query hits of two encoders on the same queries, e.g.
    ``retrieval_accuracy``'s ``hits_top1``) with a percentile bootstrap interval over the query
    patients, both encoders weighted by the same draws: ``diff``, ``diff_ci_low``,
    ``diff_ci_high``."""
    hits_a, hits_b = np.asarray(hits_a, np.float64), np.asarray(hits_b, np.float64)
    if hits_a.shape != hits_b.shape or hits_a.shape != np.shape(query_patients):
        raise ValueError("hits and query_patients must have one value per query")
    if hits_a.size == 0:
        nan = float("nan")
        return {"diff": nan, "diff_ci_low": nan, "diff_ci_high": nan}
    delta = hits_a - hits_b
    plan = resampling_plan(np.asarray(query_patients), n_rows=delta.size)
    weights = plan.weights(np.random.default_rng(seed), n_bootstrap)
    values = weights @ delta / weights.sum(axis=1)
    tail = 100 * (1 - ci) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"diff": float(delta.mean()), "diff_ci_low": float(low), "diff_ci_high": float(high)}


def _row(source: str, metric: str, **values) -> dict:
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(source=source, metric=metric, **values)
    return row


def retrieval_rows(
    sources: Mapping[str, np.ndarray],
    patient_ids: np.ndarray,
    reference: str | None = None,
    ks: Sequence[int] = (1, 5),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Retrieval top-k of every source (one row per source and k), and a ``chance`` row per k."""
    patient_ids = np.asarray(patient_ids)
    results = {name: retrieval_accuracy(x, patient_ids, k=ks) for name, x in sources.items()}
    rows = []
    for name, result in results.items():
        bounds = retrieval_intervals(result, patient_ids, n_bootstrap, seed=seed)
        query_patients = patient_ids[result["query_rows"]]
        for k in ks:
            metric = f"retrieval_top{k}"
            paired = {}
            if reference is not None and name != reference:
                paired = paired_retrieval_difference(
                    result[f"hits_top{k}"],
                    results[reference][f"hits_top{k}"],
                    query_patients,
                    n_bootstrap,
                    seed=seed,
                )
            rows.append(
                _row(
                    name,
                    metric,
                    value=result[metric],
                    ci_low=bounds[f"{metric}_ci_low"],
                    ci_high=bounds[f"{metric}_ci_high"],
                    n=result["n_queries"],
                    **paired,
                )
            )
    first = next(iter(results.values()))
    rows += [
        _row("chance", f"retrieval_top{k}", value=first[f"chance_top{k}"], n=first["n_queries"])
        for k in ks
    ]
    return rows


def probe_rows(
    sources: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    tasks: Sequence[str],
    reference: str | None = None,
    sizes: Sequence[int | str] = (100, 400),
    repeats: int = 5,
    n_bootstrap: int = 200,
    seed: int = 0,
    patient_column: str = "patient_id",
    progress=None,
) -> list[dict]:
    """Linear-probe learning curves of every source on every task (``"column:kind"``, rows with
    an unknown label left out), summarised over repeats with the paired difference to
    ``reference``."""
    rows = []
    for spec in tasks:
        task = TaskSpec.parse(spec)
        column = table[task.column].to_numpy()
        known = known_labels(column, task.kind or "binary")
        task = task.resolve(column[known])
        known = known_labels(column, task.kind)
        y, classes = encode_labels(column[known], task.kind)
        curve = learning_curve(
            {name: np.asarray(x)[known] for name, x in sources.items()},
            y,
            table[patient_column].to_numpy()[known],
            task.kind,
            task_name=task.column,
            n_outputs=len(classes) if task.kind == "multiclass" else None,
            sizes=sizes,
            repeats=repeats,
            n_bootstrap=n_bootstrap,
            seed=seed,
            progress=progress,
        )
        results = curve.results[curve.results["metric"] == PRIMARY_METRIC[task.kind]]
        for (label, name), part in results.groupby(["size_label", "source"], sort=False):
            values = part.set_index("repeat")["value"]
            paired = {}
            if reference is not None and name != reference:
                base = results[
                    (results["size_label"] == label) & (results["source"] == reference)
                ].set_index("repeat")["value"]
                delta = (values - base).dropna()
                paired = {"diff": delta.mean(), "diff_sd": delta.std()}
            rows.append(
                _row(
                    name,
                    f"{task.column}_{PRIMARY_METRIC[task.kind]}@{label}",
                    value=values.mean(),
                    sd=values.std(),
                    ci_low=part["ci_low"].mean(),
                    ci_high=part["ci_high"].mean(),
                    n=int(part["n_train"].iloc[0]),
                    **paired,
                )
            )
    return rows


def transfer_evaluation(
    sources: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    tasks: Sequence[str] = (),
    reference: str | None = None,
    ks: Sequence[int] = (1, 5),
    sizes: Sequence[int | str] = (100, 400),
    repeats: int = 5,
    n_bootstrap: int = 1000,
    probe_bootstrap: int = 200,
    seed: int = 0,
    patient_column: str = "patient_id",
    progress=None,
) -> pd.DataFrame:
    """Retrieval and linear probes of every source on the ECGs of ``table`` (module docstring).

    Args:
        sources: name -> ``(N, D)`` embeddings of the ``N = len(table)`` ECGs, in table order.
        table: one row per ECG: ``patient_column`` and the label columns ``tasks`` name.
        tasks: probe tasks ``"column:kind"`` (kinds of :mod:`pclr_jax.evaluation.probe`).
        reference: the source every other is compared with (paired), e.g. ``"cpu_default"``.
        ks, sizes, repeats: retrieval cut-offs, probe training sizes and repeats.
        n_bootstrap, probe_bootstrap: resamples for retrieval and for each probe fit.

    Returns:
        A frame with :data:`COLUMNS`, one row per (source, metric), plus ``chance`` rows.
    """
    n = len(table)
    for name, x in sources.items():
        if np.shape(x)[0] != n:
            raise ValueError(f"source {name!r} has {np.shape(x)[0]} rows, the table {n}")
    if reference is not None and reference not in sources:
        raise ValueError(f"reference {reference!r} is not a source ({list(sources)})")
    patients = table[patient_column].to_numpy()
    rows = retrieval_rows(sources, patients, reference, ks, n_bootstrap, seed)
    rows += probe_rows(
        sources,
        table,
        tasks,
        reference,
        sizes,
        repeats,
        probe_bootstrap,
        seed,
        patient_column,
        progress,
    )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _cell(row: pd.Series, digits: int = 3) -> str:
    if np.isnan(row["value"]):
        return ""
    text = f"{row['value']:.{digits}f}"
    if np.isfinite(row["sd"]):
        text += f" ± {row['sd']:.{digits}f}"
    elif np.isfinite(row["ci_low"]):
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    if np.isfinite(row["diff"]):
        sign = "+" if row["diff"] >= 0 else "−"
        text += f" ({sign}{abs(row['diff']):.{digits}f}"
        if np.isfinite(row["diff_ci_low"]):
            text += f" [{row['diff_ci_low']:+.{digits}f}, {row['diff_ci_high']:+.{digits}f}]"
        elif np.isfinite(row["diff_sd"]):
            text += f" ± {row['diff_sd']:.{digits}f}"
        text += ")"
    return text


def side_by_side(frame: pd.DataFrame, sources: Sequence[str] | None = None) -> str:
    """A markdown table of a :func:`transfer_evaluation` frame: metrics down, sources across.

    A cell is ``value [ci_low, ci_high]`` (retrieval) or ``mean ± sd over repeats`` (probes),
    followed by ``(difference to the reference [interval])`` (retrieval) or ``(mean difference ±
    its sd over the repeats)`` (probes).
    """
    numbers = [c for c in COLUMNS if c not in ("source", "metric")]
    frame = frame.astype(dict.fromkeys(numbers, float))  # JSON nulls -> NaN
    sources = list(sources or dict.fromkeys(frame["source"]))
    metrics = list(dict.fromkeys(frame["metric"]))
    cells = {(r["metric"], r["source"]): _cell(r) for _, r in frame.iterrows()}
    lines = [
        "| metric | " + " | ".join(sources) + " |",
        "| --- |" + " --- |" * len(sources),
    ]
    for metric in metrics:
        row = [cells.get((metric, source), "") for source in sources]
        lines.append(f"| {metric} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- Several training seeds: per-item results, and the metrics under common patient resamples ---

RETRIEVAL = "retrieval"


@dataclasses.dataclass(frozen=True)
class TransferItems:
    """One encoder's per-item results on one metric, from which the metric can be recomputed
    under any weighting of the metric's rows (a patient bootstrap of the real ECGs).

    The metric's rows are fixed by the data, not by the encoder: retrieval's query rows, or a
    probe task's labelled ECGs. ``parts`` holds one ``(rows, y, scores)`` per probe repeat (its
    test rows into the metric's rows, their encoded labels and the probe's scores) or, for
    retrieval (``kind == "retrieval"``), one ``(rows, None, hits)`` with every query's expected
    hit. The metric is the mean over the parts of the part's primary metric (retrieval: the
    mean hit over the queries), as :func:`transfer_evaluation` reports it.
    """

    kind: str
    parts: tuple[tuple[np.ndarray, np.ndarray | None, np.ndarray], ...]

    def value(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of ``weights`` ``(B, M)`` (weights of the metric's rows):
        ``(B,)``; NaN where a part's weights leave it without one of its classes."""
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        if self.kind == RETRIEVAL:
            ((rows, _, hits),) = self.parts
            w = weights[:, rows]
            return w @ np.asarray(hits, np.float64) / w.sum(axis=1)
        name = PRIMARY_METRIC[self.kind]
        values = [
            weighted_metrics(
                y, np.asarray(scores, np.float64), self.kind, weights[:, rows], (name,)
            )[name]
            for rows, y, scores in self.parts
        ]
        return np.mean(values, axis=0)


@dataclasses.dataclass(frozen=True)
class MetricRows:
    """The rows a metric is measured on (the same for every encoder and training seed): their
    ``patients`` and, for a classification probe, the class ``indicator`` ``(M, C)`` that the
    patient resampling is stratified on (``None``: not stratified); ``n`` the queries (retrieval)
    or training ECGs (probe) and ``chance`` retrieval's chance level."""

    patients: np.ndarray
    indicator: np.ndarray | None = None
    n: float = float("nan")
    chance: float = float("nan")


def transfer_items(
    sources: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    tasks: Sequence[str] = (),
    ks: Sequence[int] = (1, 5),
    sizes: Sequence[int | str] = (100, 400),
    repeats: int = 5,
    seed: int = 0,
    patient_column: str = "patient_id",
) -> tuple[dict[str, MetricRows], dict[str, dict[str, TransferItems]]]:
    """The per-item results behind :func:`transfer_evaluation`'s values (the same retrieval and
    the same probe splits and fits for a given ``seed``), without intervals.

    Returns ``(rows, items)``: ``rows[metric]`` the metric's :class:`MetricRows`;
    ``items[metric][source]`` the source's :class:`TransferItems`, whose ``value`` with unit
    weights is the source's value of the metric.
    """
    patients = table[patient_column].to_numpy()
    rows: dict[str, MetricRows] = {}
    items: dict[str, dict[str, TransferItems]] = {}
    for name, x in sources.items():
        result = retrieval_accuracy(x, patients, k=ks)
        queries = np.asarray(result["query_rows"])
        for k in ks:
            metric = f"retrieval_top{k}"
            rows.setdefault(
                metric,
                MetricRows(
                    patients[queries], n=len(queries), chance=float(result[f"chance_top{k}"])
                ),
            )
            part = (np.arange(len(queries)), None, np.asarray(result[f"hits_top{k}"], np.float64))
            items.setdefault(metric, {})[name] = TransferItems(RETRIEVAL, (part,))
    for spec in tasks:
        task = TaskSpec.parse(spec)
        column = table[task.column].to_numpy()
        task = task.resolve(column[known_labels(column, task.kind or "binary")])
        known = known_labels(column, task.kind)
        y, classes = encode_labels(column[known], task.kind)
        n_outputs = len(classes) if task.kind == "multiclass" else None
        curve = learning_curve(
            {name: np.asarray(x)[known] for name, x in sources.items()},
            y,
            patients[known],
            task.kind,
            task_name=task.column,
            n_outputs=n_outputs,
            sizes=sizes,
            repeats=repeats,
            n_bootstrap=0,
            seed=seed,
            keep_scores=True,
        )
        n_columns = n_outputs or (y.shape[1] if task.kind == "multilabel" else 1)
        indicator = class_indicator(y, task.kind, n_columns)
        for fit in curve.scores:
            metric = f"{task.column}_{PRIMARY_METRIC[task.kind]}@{fit.size_label}"
            size = float(fit.size_label) if fit.size_label.isdigit() else float("nan")
            rows.setdefault(metric, MetricRows(patients[known], indicator, n=size))
            by_source = items.setdefault(metric, {})
            previous = by_source.get(fit.source, TransferItems(task.kind, ())).parts
            part = (np.asarray(fit.test_rows), y[fit.test_rows], np.asarray(fit.scores))
            by_source[fit.source] = TransferItems(task.kind, (*previous, part))
    return rows, items


def common_deviations(
    metric_rows: MetricRows,
    cells: Mapping[object, TransferItems],
    n_bootstrap: int = 1000,
    seed: int = 0,
    metric: str = "",
) -> dict[object, np.ndarray]:
    """Every cell's deviations under common patient resamples of the metric's rows.

    ``cells`` maps any key (e.g. ``(source, training_seed)``) to that cell's items on the same
    metric rows. One set of ``n_bootstrap`` patient resamples (stratified on the metric's classes,
    :mod:`pclr_jax.evaluation.resampling`; seeded by ``seed`` and ``metric``) weighs every cell:
    returns ``{key: (B,) metric under each resample minus the cell's value}``. Paired across
    cells: a difference between two cells' deviations is the difference's deviation under the
    same patient draw (``pclr_jax.study.two_source``'s input).
    """
    plan = resampling_plan(metric_rows.patients, metric_rows.indicator)
    rng = np.random.default_rng([seed, zlib.crc32(metric.encode())])
    n_rows = len(metric_rows.patients)
    chunk = max(1, 2**22 // max(n_rows, 1))
    parts: dict[object, list[np.ndarray]] = {key: [] for key in cells}
    for start in range(0, n_bootstrap, chunk):
        weights = plan.weights(rng, min(chunk, n_bootstrap - start))
        for key, cell in cells.items():
            parts[key].append(cell.value(weights))
    ones = np.ones((1, n_rows))
    return {key: np.concatenate(p) - cells[key].value(ones)[0] for key, p in parts.items()}
