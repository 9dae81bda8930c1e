"""Confidence intervals over seeds, and paired differences between arms over matched seeds.

A study has few seeds per arm (3-5). Over so few values the honest interval is Student's t:
``mean ± t(0.975, n-1) · sd / sqrt(n)``, exact when the per-seed values are normal and the right
width for small n (it widens sharply as n falls). A bootstrap over 3-5 values is not: it can
only resample the seeds it has (3 seeds give 10 distinct resampled means), its percentile
interval ignores the unseen spread and covers far less than its nominal 95%.

Arms are compared pairwise against a reference arm over *matched seeds*: seed ``s`` gives both
arms the same initialisation, batch order and probe label draws, so the per-seed differences
remove the variance the arms share. The interval is the paired t interval of those differences
(a one-sample t interval of the per-seed differences, i.e. ``scipy.stats.ttest_rel``); a
difference is *resolved* when its interval excludes 0.

Values with no spread (every seed gives the same number) have no measurable noise: their
interval is the point itself, and a nonzero difference of that kind is *constant*, not resolved.
It happens with discrete metrics at few seeds (retrieval top-1 over 522 queries moves in steps of
1/522: two seeds that both gain one query give a zero-width interval), where the t interval's
zero width says nothing about how large the noise really is.

These intervals cover the seeds only: every seed is scored on the same test set, whose own noise
they cannot see. ``two_source`` adds it when the cells kept their per-test-item results.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its two-sided ``confidence`` interval ``[low, high]`` (NaN for
    n < 2), the values' standard deviation ``sd`` and, for differences, the two-sided p-value of
    mean 0. ``test_sd``: the standard deviation the test set adds to the mean (``two_source``);
    NaN for a seed-only t interval."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    p_value: float = float("nan")
    test_sd: float = float("nan")

    @property
    def constant(self) -> bool:
        """True when two or more values are all equal and no test-set noise is known: no spread
        to judge noise by."""
        return self.n >= 2 and self.sd == 0.0 and not self.test_sd > 0

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (both bounds on the same side) and has a width:
        a constant difference is never resolved (see the module docstring)."""
        return bool(not self.constant and (self.low > 0 or self.high < 0))


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return values[np.isfinite(values)]


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite ``values`` and its Student t interval (``scipy.stats.ttest_1samp``).

    With zero spread the interval is the point itself (``constant``; p-value NaN); with fewer
    than 2 values it is NaN.
    """
    values = _finite(values)
    n = values.size
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, float("nan"))
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), 1, float("nan"))
    sd = float(values.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal values (up to rounding): no spread
        return Interval(mean, mean, mean, n, 0.0)
    result = stats.ttest_1samp(values, 0.0)
    low, high = result.confidence_interval(confidence)
    return Interval(mean, float(low), float(high), n, sd, float(result.pvalue))


def paired_difference(arm, reference, confidence: float = CONFIDENCE) -> Interval:
    """``arm - reference`` over matched seeds: the mean per-seed difference and its paired t
    interval. ``arm`` and ``reference`` are ``{seed: value}``; seeds missing or non-finite on
    either side are left out."""
    seeds = sorted(
        s for s in set(arm) & set(reference) if np.isfinite(arm[s]) and np.isfinite(reference[s])
    )
    differences = [arm[s] - reference[s] for s in seeds]
    return t_interval(differences, confidence)
