"""Intervals that cover both sources of a study's noise: the seeds and the test set.

A study's metric for an arm at seed ``s`` is measured on one fixed test set. Its error has a part
that changes with the seed (initialisation, batch order, probe label draws, and how these meet
each test patient) and a part that every seed shares: which patients happen to be in the test
set. Averaging over seeds shrinks the first and leaves the second untouched, and a t interval
over the seeds cannot see the second at all (every seed has the same test set): with test-set
noise only, three seeds agree closely and the seed-only interval is far too narrow.

Model (a difference between two arms, or one arm's metric): ``x(s, j) = δ + u(s) + v(j) +
e(s, j)`` over seeds ``s`` and test patients ``j``, with ``D`` the mean over both. Then
``Var(D) = σ_u²/S + σ_v²/J + σ_e²/(SJ)``, and

* the sample variance of the per-seed values ``d(s)`` estimates ``σ_u² + σ_e²/J`` (the shared
  ``v`` cancels): the seed part plus the seed-by-patient part, with ``S - 1`` degrees of freedom;
* the shared part ``σ_v²/J`` is the covariance, between two different seeds, of the metric under
  a common resample of the test patients: the average off-diagonal covariance of the per-seed
  bootstrap replicates (``deviations``; the same patient draw for every seed and, for a
  difference, for both arms). The diagonal would count ``σ_e²/J`` a second time.

The interval is ``D ± q`` where ``q`` is the 95% quantile of ``|se·T + sd_test·Z|``, ``T`` Student
t with ``S - 1`` degrees of freedom, ``se = sd/√S``, ``Z`` standard normal: the seed part keeps
its t distribution (exact for normal seeds at few seeds) and the test-set part, a mean over
hundreds of patients, is normal. It is the paired t interval when the test set adds nothing and
the bootstrap's normal interval when the seeds agree exactly; the p-value is ``P(|se·T +
sd_test·Z| >= |D|)``, so ``p < 0.05`` exactly when the interval excludes 0.
``tests/test_study_statistics.py`` simulates studies with known differences and checks coverage.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import optimize, special, stats

from pclr_jax.evaluation.resampling import resampling_plan
from pclr_jax.study.items import MetricItems
from pclr_jax.study.statistics import CONFIDENCE, Interval

# Bootstrap weight matrices are processed in chunks of about this many elements.
_CHUNK_ELEMENTS = 2**22


def _tail(x: float, seed_se: float, df: int, test_sd: float) -> float:
    """``P(|seed_se·T + test_sd·Z| >= x)`` for ``x >= 0`` (see the module docstring).

    ``T = Z' / sqrt(W / df)`` with ``W`` chi-square: given ``W`` the sum is normal with variance
    ``seed_se² df / W + test_sd²``, so the tail is a one-dimensional integral over ``W``, taken by
    the trapezoidal rule in ``log W`` (a smooth integrand decaying exponentially at both ends,
    where the rule converges geometrically: within 1e-10 of Student's t tail for df 1-9 up to
    ``x`` = 1,000 standard errors).
    """
    top = np.log(df + 20 * np.sqrt(2 * df) + 20)
    log_w = np.linspace(-60.0, top, 2000)
    w = np.exp(log_w)
    log_density = (df / 2) * (log_w - np.log(2)) - w / 2 - special.gammaln(df / 2)
    weights = np.exp(log_density) * (log_w[1] - log_w[0])
    scale = np.sqrt(seed_se**2 * df / w + test_sd**2)
    return float(np.sum(weights * 2 * special.ndtr(-x / scale)))


def two_source_interval(values, deviations: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The interval of the mean of ``values`` (``(S,)`` per-seed values or differences) with the
    test-set noise of ``deviations`` (``(B, S)``: each seed's metric under ``B`` common resamples
    of the test patients, minus its value on the test set itself).

    Returns an ``Interval`` whose ``sd`` is the per-seed values' and ``test_sd`` the shared test-set
    standard deviation of the mean; NaN bounds for fewer than 2 seeds.
    """
    values = np.asarray(values, dtype=np.float64)
    deviations = np.asarray(deviations, dtype=np.float64).reshape(-1, values.size)
    deviations = deviations[np.isfinite(deviations).all(axis=1)]
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    if n < 2 or len(deviations) < 2:
        return Interval(mean, float("nan"), float("nan"), n, float("nan"))
    sd = float(values.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        sd = 0.0
    covariance = np.cov(deviations, rowvar=False)
    shared = (covariance.sum() - np.trace(covariance)) / (n * (n - 1))
    test_sd = float(np.sqrt(max(shared, 0.0)))
    if test_sd <= 1e-12 * max(1.0, abs(mean)):
        test_sd = 0.0
    if sd == 0 and test_sd == 0:
        return Interval(mean, mean, mean, n, 0.0, test_sd=0.0)
    seed_se, df = sd / np.sqrt(n), n - 1
    alpha = 1 - confidence
    # The quantile of the sum lies between the larger of the two parts' own quantiles (Anderson's
    # theorem: adding a symmetric unimodal error widens) and the sum of their alpha/2 quantiles.
    seed_q = [stats.t.ppf(1 - a / 2, df) * seed_se for a in (alpha, alpha / 2)]
    test_q = [stats.norm.ppf(1 - a / 2) * test_sd for a in (alpha, alpha / 2)]
    low, high = max(seed_q[0], test_q[0]), seed_q[1] + test_q[1]
    if test_sd == 0 or seed_se == 0:  # one part alone: its own quantile
        half = low
    else:
        half = optimize.brentq(
            lambda q: _tail(q, seed_se, df, test_sd) - alpha, low, high, xtol=1e-9 * high
        )
    p_value = min(1.0, _tail(abs(mean), seed_se, df, test_sd))
    return Interval(mean, float(mean - half), float(mean + half), n, sd, p_value, test_sd)


def metric_deviations(
    cells: dict, patient_id: np.ndarray, n_bootstrap: int, seed: int, metric: str
) -> dict:
    """Each cell's test-set deviations of one metric under common resamples of the test patients.

    Args:
        cells: ``{(arm, seed): MetricItems}`` of the metric, every cell on the same test rows
            and labels (the caller checks, ``same_test_items``).
        patient_id: ``(N,)`` patient of each ECG of the test split.
        n_bootstrap: resamples ``B``; ``seed`` and ``metric`` seed them (the same draw whatever
            the order in which metrics are reported).

    Returns ``{(arm, seed): (B,) deviations}``: the metric under each resample minus its value on
    the test set itself. Resamples draw patients, stratified on the metric's classes
    (``pclr_jax.evaluation.resampling``).
    """
    first = next(iter(cells.values()))
    plan = resampling_plan(patient_id[first.rows], first.labels_for_strata())
    rng = np.random.default_rng([seed, zlib.crc32(metric.encode())])
    chunk = max(1, _CHUNK_ELEMENTS // max(len(first.rows), 1))
    deviations = {key: [] for key in cells}
    for start in range(0, n_bootstrap, chunk):
        weights = plan.weights(rng, min(chunk, n_bootstrap - start))
        for key, items in cells.items():
            deviations[key].append(items.value(weights))
    ones = np.ones((1, len(first.rows)))
    return {
        key: np.concatenate(parts) - cells[key].value(ones)[0] for key, parts in deviations.items()
    }


def same_test_items(cells: dict[tuple, MetricItems]) -> bool:
    """True when every cell scored the metric on the same test rows with the same labels."""
    first = next(iter(cells.values()))
    for items in cells.values():
        if items.kind != first.kind or not np.array_equal(items.rows, first.rows):
            return False
        if first.y is not None and not np.array_equal(items.y, first.y):
            return False
    return True
