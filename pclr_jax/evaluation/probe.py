"""Linear probes of frozen embeddings and label-efficiency learning curves.

A linear probe drops the features that are constant on its training rows, clips every feature of
the rows it scores to the range the training rows span, standardises the features and fits, with
scikit-learn,
``LogisticRegressionCV`` (L2, Newton-Cholesky solver, the inverse regularisation ``C`` chosen by
cross-validated log loss)
for binary and multi-class labels, one such model per label for multi-label targets, or ``RidgeCV``
(``alpha`` chosen by cross-validation) for continuous targets. When patient ids of the training rows
are given, the cross-validation folds are patient-disjoint as well.

Why drop and clip: the pooled ReLU features of a (randomly initialised) encoder include channels
that are zero, or nearly, on every training row but not on some test rows. Standardising
divides by their tiny training spread, so a test row's ordinary value becomes hundreds of
standard deviations and one absurd prediction sinks the score (an age R^2 of -125 in one repeat
where the others scored -0.1 to 0.2). A feature constant on the training rows carries no
information for the fit and is dropped (``VarianceThreshold``); clipping
(``MinMaxScaler(clip=True)``, an affine map, so the standardised values are those of the clipped
features) means the probe never extrapolates beyond what its training rows showed. Rows within
the training range are scored exactly as without clipping.

``learning_curve`` repeats, for several training-set sizes and several embedding sources side by
side, a patient-disjoint split into a test set and a training pool, fits on nested random subsets
of the pool (the same rows for every source) and scores on the test set with bootstrap intervals
over test patients (``metrics.bootstrap_metrics``).

Labels are encoded before fitting (``encode_labels``): binary -> {0, 1} (the larger of the two
sorted classes is positive), multiclass -> class index, multilabel -> ``(n, C)`` indicator,
regression -> float. Unknown labels (NaN, empty, or negative codes such as the data sets' -1) are
found by ``known_labels`` and must be removed, and counted, by the caller.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from threadpoolctl import threadpool_limits

from pclr_jax.evaluation.metrics import METRICS, bootstrap_metrics, interval_note, point_metrics

TASK_KINDS = tuple(METRICS)
PRIMARY_METRIC = {
    "binary": "auroc",
    "multiclass": "auroc",
    "multilabel": "auroc",
    "regression": "r2",
}
DEFAULT_SIZES: tuple[int | str, ...] = (100, 250, 500, 1000, 2500, 5000, "all")
# Inverse regularisation strengths and ridge penalties searched by cross-validation.
DEFAULT_CS = tuple(np.logspace(-4, 2, 10))
DEFAULT_ALPHAS = tuple(np.logspace(-2, 5, 15))
MULTILABEL_SEPARATORS = r"[;|,]"


class ProbeError(ValueError):
    """A probe cannot be fitted on these rows (e.g. too few examples of a class)."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A label column and how to treat it: ``"sex:binary"``, ``"age:regression"``; an empty
    ``kind`` is inferred from the labels by ``resolve``."""

    column: str
    kind: str

    @classmethod
    def parse(cls, spec: str) -> TaskSpec:
        """``"column"`` (kind inferred later by ``resolve``) or ``"column:kind"``."""
        column, sep, kind = spec.rpartition(":")
        if not sep:
            column, kind = spec, ""
        if kind and kind not in TASK_KINDS:
            raise ValueError(f"task {spec!r}: kind must be one of {list(TASK_KINDS)}")
        if not column:
            raise ValueError(f"task {spec!r} names no column")
        return cls(column, kind)

    def resolve(self, values) -> TaskSpec:
        """This task with its kind inferred from the known label ``values`` if it was not given."""
        return self if self.kind else TaskSpec(self.column, infer_kind(values))

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.kind]


# ----------------------------------------------------------------------------- labels


def known_labels(values, kind: str) -> np.ndarray:
    """Boolean mask of the rows of a label column (n,) whose label is known: not NaN/None/empty
    and, for categorical kinds, not a negative code (the data sets write -1 for unknown)."""
    series = pd.Series(np.asarray(values, dtype=object))
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
    if kind == "regression":
        return np.isfinite(numbers)
    known = series.notna().to_numpy() & (series.astype(str).str.strip() != "").to_numpy()
    return known & ~(np.isfinite(numbers) & (numbers < 0))


def infer_kind(values) -> str:
    """``binary`` for two distinct known values, ``regression`` for numbers with more than 20
    distinct values, else ``multiclass``."""
    series = pd.Series(np.asarray(values, dtype=object)).dropna()
    distinct = series.nunique()
    if distinct == 2:
        return "binary"
    numeric = pd.to_numeric(series, errors="coerce").notna().all()
    return "regression" if numeric and distinct > 20 else "multiclass"


def encode_labels(values, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Encodes known labels for fitting; returns ``(y, classes)``.

    binary: ``y`` in {0, 1}, ``classes`` the two sorted values (``classes[1]`` is positive);
    multiclass: ``y`` (n,) index into ``classes``; multilabel: ``values`` are strings of labels
    separated by ``;``, ``|`` or ``,`` (or an (n, C) 0/1 array) -> ``y`` (n, C);
    regression: ``y`` float64, ``classes`` empty.
    """
    unknown = np.flatnonzero(~known_labels(values, kind)) if np.ndim(values) == 1 else []
    if len(unknown):
        raise ValueError(
            f"{len(unknown)} labels are unknown (e.g. rows {unknown[:5].tolist()}); remove them "
            "first (known_labels)"
        )
    if kind == "regression":
        y = pd.to_numeric(pd.Series(values), errors="raise").to_numpy(np.float64)
        return y, np.array([])
    if kind == "multilabel":
        array = np.asarray(values)
        if array.ndim == 2:
            return array.astype(np.int64), np.arange(array.shape[1])
        sets = [
            {t.strip() for t in re.split(MULTILABEL_SEPARATORS, str(v)) if t.strip()}
            for v in values
        ]
        classes = np.array(sorted(set().union(*sets)))
        y = np.array([[c in s for c in classes] for s in sets], dtype=np.int64)
        return y.reshape(len(sets), len(classes)), classes
    classes, y = np.unique(np.asarray(values), return_inverse=True)
    if kind == "binary" and len(classes) != 2:
        raise ValueError(f"a binary task needs exactly 2 classes, found {classes.tolist()[:10]}")
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"unknown task kind {kind!r}; expected one of {list(TASK_KINDS)}")
    return y.reshape(-1).astype(np.int64), classes


# ----------------------------------------------------------------------------- probes


def _cv_splits(y: np.ndarray, groups, kind: str, n_splits: int, seed: int) -> list:
    """Cross-validation folds; patient-disjoint with ``groups``; every training fold holds every
    class (for classification)."""
    n = len(y)
    if kind == "regression":
        n_splits = min(n_splits, n if groups is None else len(np.unique(groups)))
        if n_splits < 2:
            raise ProbeError(f"{n} training rows are too few for cross-validation")
        splitter = (
            KFold(n_splits, shuffle=True, random_state=seed)
            if groups is None
            else GroupKFold(n_splits, shuffle=True, random_state=seed)
        )
        return list(splitter.split(np.zeros(n), y, groups))
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise ProbeError(f"the training rows hold a single class ({present.tolist()})")
    n_splits = min(n_splits, int(counts[present].min()))
    if n_splits < 2:
        raise ProbeError(
            f"class {int(present[counts[present].argmin()])} has a single training example"
        )
    splitter = (
        StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        if groups is None
        else StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    )
    folds = [
        (fit, held)
        for fit, held in splitter.split(np.zeros(n), y, groups)
        if len(np.unique(y[fit])) == len(present)
    ]
    if len(folds) < 2:
        raise ProbeError("too few training examples per class for patient-disjoint folds")
    return folds


@dataclasses.dataclass
class LinearProbe:
    """A fitted probe: ``models`` holds one sklearn pipeline (one per label for multilabel)."""

    kind: str
    models: list[Pipeline]
    n_outputs: int

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores for ``x`` (n, D): binary (n,) P(class 1); multiclass (n, n_outputs)
        probabilities (zero for classes absent from training); multilabel (n, n_outputs);
        regression (n,) predictions."""
        if self.kind == "regression":
            return self.models[0].predict(x)
        if self.kind == "multilabel":
            return np.stack([m.predict_proba(x)[:, 1] for m in self.models], axis=1)
        model = self.models[0]
        probabilities = model.predict_proba(x)
        if self.kind == "binary":
            return probabilities[:, 1]
        full = np.zeros((len(x), self.n_outputs))
        full[:, model.classes_] = probabilities
        return full


def _fit_one(x, y, kind, groups, cv, cs, alphas, seed, max_iter, blas_threads) -> Pipeline:
    folds = _cv_splits(y, groups, kind, cv, seed)
    if kind == "regression":
        estimator = RidgeCV(alphas=alphas, cv=folds, scoring="neg_mean_squared_error")
    else:
        estimator = LogisticRegressionCV(
            Cs=list(cs),
            l1_ratios=(0.0,),
            cv=folds,
            scoring="neg_log_loss",
            solver="newton-cholesky",
            max_iter=max_iter,
            use_legacy_attributes=False,
            random_state=seed,
        )
    if not (np.ptp(x, axis=0) > 0).any():
        raise ProbeError(f"every feature is constant on the {len(x)} training rows")
    model = make_pipeline(
        VarianceThreshold(0.0), MinMaxScaler(clip=True), StandardScaler(), estimator
    )
    with warnings.catch_warnings(), threadpool_limits(blas_threads, user_api="blas"):
        # The weakest penalties of the grid may stop short of full convergence on separable
        # folds; the held-out log loss that picks C judges those fits as they are.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def fit_linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    groups: np.ndarray | None = None,
    *,
    n_outputs: int | None = None,
    cv: int = 5,
    cs: Sequence[float] = DEFAULT_CS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
    max_iter: int = 100,
    blas_threads: int | None = 1,
) -> LinearProbe:
    """Fits a linear probe on features ``x`` (n, D) and encoded labels ``y`` (see module doc).

    ``groups`` (n,) are patient ids: cross-validation folds then never split a patient.
    ``n_outputs`` is the number of classes of a multiclass task (default: ``y.max() + 1``).
    ``blas_threads`` caps BLAS threads during the fit (None: no cap). The many small solves of
    the cross-validation grid run faster on one thread: 4,000 x 320 features on a 2-core machine
    shared with other jobs took 2.6 s (logistic) and 1.7 s (ridge) on one thread against 20.5 s
    and 32.5 s with OpenBLAS' default threads.
    Raises ``ProbeError`` when the rows cannot support cross-validation.
    """
    x = np.asarray(x, np.float64)
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {list(TASK_KINDS)}")
    if not np.isfinite(x).all():
        raise ValueError(
            f"features have non-finite values at rows {np.flatnonzero(~np.isfinite(x).all(1))[:10]}"
        )
    options = dict(
        cv=cv, cs=cs, alphas=alphas, seed=seed, max_iter=max_iter, blas_threads=blas_threads
    )
    if kind == "multilabel":
        models = [_fit_one(x, y[:, c], "binary", groups, **options) for c in range(y.shape[1])]
        return LinearProbe(kind, models, y.shape[1])
    outputs = n_outputs or (int(y.max()) + 1 if kind == "multiclass" else 1)
    return LinearProbe(kind, [_fit_one(x, y, kind, groups, **options)], outputs)


def score_predictions(
    y: np.ndarray,
    scores: np.ndarray,
    kind: str,
    n_bootstrap: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics (see ``metrics.point_metrics``) and, with ``n_bootstrap`` > 0, their
    ``{metric}_ci_low`` / ``{metric}_ci_high`` percentile-bootstrap bounds over resampled test
    patients (``groups``: ``(n,)`` patient ids; ``None``: each row is a patient)."""
    result = point_metrics(y, scores, kind)
    if n_bootstrap > 0:
        intervals = bootstrap_metrics(y, scores, kind, n_bootstrap, ci, seed, groups)
        for name, (low, high) in intervals.items():
            result[f"{name}_ci_low"] = low
            result[f"{name}_ci_high"] = high
    return result


def linear_probe(
    train_x: np.ndarray,
    train_y,
    test_x: np.ndarray,
    test_y,
    task: str = "binary",
    *,
    train_groups: np.ndarray | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    **fit_options,
) -> dict[str, float]:
    """Fits a linear probe on ``(train_x (n, D), train_y)`` and scores it on the test rows.

    Labels are raw values (strings or numbers; unknown labels must already be removed); they are
    encoded together so both sides share the classes. Returns ``auroc``/``auprc`` (binary;
    macro for multiclass and multilabel) or ``r2``/``mae`` (regression), ``n_train``, ``n_test``,
    and bootstrap bounds when ``n_bootstrap`` > 0 (over ECGs: the test rows' patients are not
    given). ``fit_options`` go to ``fit_linear_probe``.
    """
    n_train = len(train_x)
    if task == "multilabel" and np.ndim(train_y) == 2:
        labels = np.concatenate([np.asarray(train_y), np.asarray(test_y)])
    else:
        labels = np.concatenate(
            [np.asarray(train_y, dtype=object), np.asarray(test_y, dtype=object)]
        )
    y, classes = encode_labels(labels, task)
    probe = fit_linear_probe(
        train_x,
        y[:n_train],
        task,
        train_groups,
        n_outputs=max(len(classes), 1),
        seed=seed,
        **fit_options,
    )
    result = score_predictions(
        y[n_train:], probe.scores(np.asarray(test_x)), task, n_bootstrap, seed=seed
    )
    result.update(n_train=n_train, n_test=len(test_x))
    return result


# ----------------------------------------------------------------------------- learning curves

# A source either gives features for linear probes, or fits and predicts by itself (a supervised
# network): ``fit_predict(train_rows, test_rows, y, groups, kind, n_outputs, seed) -> scores`` where
# ``y``/``groups`` cover all rows and scores are shaped as ``LinearProbe.scores``.
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, int, int], np.ndarray]


def linear_probe_source(features: np.ndarray, **fit_options) -> FitPredict:
    """A learning-curve source that fits a linear probe on rows of ``features`` (N, D)."""
    features = np.asarray(features)

    def fit_predict(train_rows, test_rows, y, groups, kind, n_outputs, seed):
        probe = fit_linear_probe(
            features[train_rows],
            y[train_rows],
            kind,
            groups[train_rows],
            n_outputs=n_outputs,
            seed=seed,
            **fit_options,
        )
        return probe.scores(features[test_rows])

    return fit_predict


@dataclasses.dataclass
class LearningCurve:
    """``results``: one row per (source, task, size, repeat, metric) with columns source, task,
    size (training rows used), size_label ('100' ... 'all'), repeat, metric, value, ci_low,
    ci_high, n_train, n_test, ci_note (what the interval cannot cover: classes outside the macro
    average, classes with a single positive or negative test patient; '' if nothing).
    ``skipped``: source, task, size_label, repeat, reason. ``scores`` (with ``keep_scores``):
    one ``FitScores`` per fit."""

    results: pd.DataFrame
    skipped: pd.DataFrame
    scores: list[FitScores] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FitScores:
    """One fit's scores on its test rows: ``test_rows`` ``(m,)`` index into the curve's rows,
    ``scores`` shaped as ``LinearProbe.scores`` for those rows."""

    source: str
    size_label: str
    repeat: int
    test_rows: np.ndarray
    scores: np.ndarray


RESULT_COLUMNS = (
    "source",
    "task",
    "size",
    "size_label",
    "repeat",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_train",
    "n_test",
    "ci_note",
)
SKIPPED_COLUMNS = ("source", "task", "size_label", "repeat", "reason")


def _single_class(y: np.ndarray, kind: str) -> bool:
    if kind == "regression":
        return False
    if kind == "multilabel":
        column_sums = y.sum(axis=0)
        return not ((column_sums > 0) & (column_sums < len(y))).any()
    return len(np.unique(y)) < 2


def learning_curve(
    sources: Mapping[str, np.ndarray | FitPredict],
    y: np.ndarray,
    patient_ids: np.ndarray,
    kind: str,
    *,
    task_name: str = "label",
    n_outputs: int | None = None,
    sizes: Sequence[int | str] = DEFAULT_SIZES,
    repeats: int = 5,
    test_fraction: float = 0.2,
    test_rows: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    class_names: Sequence[str] | None = None,
    keep_scores: bool = False,
) -> LearningCurve:
    """Label-efficiency curves of several sources on one task.

    Args:
        sources: name -> features ``(N, D)`` (linear probe) or a ``FitPredict``.
        y: encoded labels of the N rows (``encode_labels``), all known.
        patient_ids: ``(N,)``; test and training rows never share a patient.
        kind: task kind; ``n_outputs``: number of classes (multiclass).
        sizes: training-set sizes (ECGs) and/or ``"all"`` (the whole training pool). Sizes larger
            than the pool are skipped and listed in ``skipped``.
        repeats: number of random splits; each draws a patient-disjoint test set
            (``test_fraction`` of the patients) unless ``test_rows`` fixes it, and one random
            order of the training pool whose prefixes are the training sets (nested sizes, the
            same rows for every source).
        n_bootstrap: resamples of the test patients for the confidence interval ``ci`` (0: no
            interval; see ``metrics.bootstrap_metrics``).
        progress: called with a short line per fit.
        class_names: the ``n_outputs`` class names, for the intervals' notes (default indices).
        keep_scores: keep every fit's test scores in ``LearningCurve.scores``.
    """
    y = np.asarray(y)
    patient_ids = np.asarray(patient_ids)
    n = len(y)
    if patient_ids.shape != (n,):
        raise ValueError(f"patient_ids must have shape ({n},), got {patient_ids.shape}")
    if n_outputs is None:
        n_outputs = (
            y.shape[1]
            if kind == "multilabel"
            else (int(y.max()) + 1 if kind == "multiclass" else 1)
        )
    fitters = {
        name: linear_probe_source(s) if isinstance(s, np.ndarray) else s
        for name, s in sources.items()
    }
    for name, source in sources.items():
        if isinstance(source, np.ndarray) and len(source) != n:
            raise ValueError(f"source {name!r} has {len(source)} rows, labels have {n}")
    results, skipped, kept = [], [], []

    def skip(source, label, repeat, reason):
        skipped.append(
            dict(source=source, task=task_name, size_label=label, repeat=repeat, reason=reason)
        )
        if progress:
            progress(f"skipped {task_name} size {label} repeat {repeat} ({source}): {reason}")

    for repeat in range(repeats):
        if test_rows is None:
            splitter = GroupShuffleSplit(1, test_size=test_fraction, random_state=seed + repeat)
            pool, test = next(splitter.split(np.zeros(n), groups=patient_ids))
        else:
            test = np.asarray(test_rows)
            pool = np.setdiff1d(np.arange(n), test)
            if np.isin(patient_ids[pool], patient_ids[test]).any():
                raise ValueError("test_rows share patients with the training rows")
        if _single_class(y[test], kind):
            skip("*", "*", repeat, f"the test set of {len(test)} rows holds a single class")
            continue
        order = np.random.default_rng(seed + repeat).permutation(pool)
        note = (
            interval_note(y[test], kind, n_outputs, patient_ids[test], class_names)
            if n_bootstrap > 0
            else ""
        )
        planned = {}
        for size in sizes:
            label = str(size)
            count = len(order) if size == "all" else int(size)
            if count > len(order):
                skip("*", label, repeat, f"only {len(order)} training rows available")
            elif count in planned.values():
                skip("*", label, repeat, f"the same {count} training rows as another size")
            else:
                planned[label] = count
        for label, count in planned.items():
            train = order[:count]
            if _single_class(y[train], kind):
                skip("*", label, repeat, f"the {count} training rows hold a single class")
                continue
            for name, fit_predict in fitters.items():
                try:
                    scores = fit_predict(
                        train, test, y, patient_ids, kind, n_outputs, seed + repeat
                    )
                except ProbeError as error:
                    skip(name, label, repeat, str(error))
                    continue
                values = score_predictions(
                    y[test], scores, kind, n_bootstrap, ci, seed + repeat, patient_ids[test]
                )
                if keep_scores:
                    kept.append(FitScores(name, label, repeat, test, np.asarray(scores)))
                for metric in METRICS[kind]:
                    results.append(
                        dict(
                            source=name,
                            task=task_name,
                            size=count,
                            size_label=label,
                            repeat=repeat,
                            metric=metric,
                            value=values[metric],
                            ci_low=values.get(f"{metric}_ci_low", np.nan),
                            ci_high=values.get(f"{metric}_ci_high", np.nan),
                            n_train=count,
                            n_test=len(test),
                            ci_note=note,
                        )
                    )
                if progress:
                    primary = PRIMARY_METRIC[kind]
                    progress(
                        f"{task_name} size {label} repeat {repeat} {name}: "
                        f"{primary} {values[primary]:.3f}"
                    )
    return LearningCurve(
        pd.DataFrame(results, columns=list(RESULT_COLUMNS)),
        pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)),
        kept,
    )


# A repeat is an outlier when its modified z-score exceeds this (Iglewicz and Hoaglin 1993).
OUTLIER_Z = 3.5
MIN_REPEATS_FOR_OUTLIERS = 3


def modified_z_scores(values: np.ndarray) -> np.ndarray:
    """Iglewicz and Hoaglin's modified z-scores ``0.6745 (x - median) / MAD`` of ``values`` (n,);
    when the median absolute deviation is 0, ``(x - median) / (1.2533 * mean absolute
    deviation)``; all zeros when every value is the same."""
    values = np.asarray(values, np.float64)
    deviation = np.abs(values - np.median(values))
    mad = np.median(deviation)
    if mad > 0:
        return 0.6745 * deviation / mad
    mean_ad = deviation.mean()
    return deviation / (1.253314 * mean_ad) if mean_ad > 0 else np.zeros_like(values)


def outlier_repeats(results: pd.DataFrame) -> pd.Series:
    """Boolean per row of ``results``: its value is an outlier among the repeats of the same
    (task, metric, size, source): modified z-score above :data:`OUTLIER_Z`, with at least
    :data:`MIN_REPEATS_FOR_OUTLIERS` finite repeats."""
    flags = pd.Series(False, index=results.index)
    for _, part in results.groupby(["task", "metric", "size_label", "source"], sort=False):
        values = part["value"].to_numpy(np.float64)
        finite = np.isfinite(values)
        if finite.sum() >= MIN_REPEATS_FOR_OUTLIERS:
            z = np.zeros(len(values))
            z[finite] = modified_z_scores(values[finite])
            flags[part.index] = z > OUTLIER_Z
    return flags


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over repeats: one row per (task, metric, size_label, source)
    with columns mean, std, repeats, size (mean training rows), outliers (how many repeats
    :func:`outlier_repeats` flags), mean_kept and std_kept (without them)."""
    flagged = results.assign(
        _outlier=outlier_repeats(results),
        _kept=results["value"].where(~outlier_repeats(results)),
    )
    grouped = flagged.groupby(["task", "metric", "size_label", "source"], sort=False)
    table = grouped.agg(
        mean=("value", "mean"),
        std=("value", "std"),
        repeats=("value", "size"),
        size=("size", "mean"),
        outliers=("_outlier", "sum"),
        mean_kept=("_kept", "mean"),
        std_kept=("_kept", "std"),
    )
    return table.reset_index().sort_values(["task", "metric", "size", "source"], ignore_index=True)


def format_summary(results: pd.DataFrame) -> str:
    """A text table, one block per task and metric: sizes down, sources across, ``mean ± sd``.

    A cell with outlier repeats (:func:`outlier_repeats`) is marked ``*``; a note under the
    tables lists those repeats and the cell without them.
    """
    table = summarize(results)
    flags = outlier_repeats(results)
    blocks = []
    for (task, metric), part in table.groupby(["task", "metric"], sort=False):
        cells = part.assign(
            cell=[
                f"{m:.3f}" + ("" if np.isnan(s) else f" ± {s:.3f}") + (" *" if o else "")
                for m, s, o in zip(part["mean"], part["std"], part["outliers"], strict=True)
            ]
        )
        pivot = cells.pivot_table(
            index=["size_label"], columns="source", values="cell", aggfunc="first", sort=False
        )
        pivot.index.name = f"{task} {metric} / n"
        blocks.append(pivot.to_string())
    if flags.any():
        notes = [
            f"* outlier repeats (modified z-score 0.6745 |x - median| / MAD > {OUTLIER_Z} among "
            "the repeats of a cell; Iglewicz and Hoaglin), included in the mean above:"
        ]
        kept = table.set_index(["task", "metric", "size_label", "source"])
        for key, part in results[flags].groupby(
            ["task", "metric", "size_label", "source"], sort=False
        ):
            row = kept.loc[key]
            repeats = ", ".join(
                f"repeat {r} = {v:.3f}" for r, v in zip(part["repeat"], part["value"], strict=True)
            )
            notes.append(
                f"  {key[0]} {key[1]} n={key[2]} {key[3]}: {repeats}; without: "
                f"{row['mean_kept']:.3f} ± {row['std_kept']:.3f}"
            )
        blocks.append("\n".join(notes))
    return "\n\n".join(blocks)
