"""How many seeds a study needs: power of the paired comparison of two arms over matched seeds.

The comparison of an arm with the reference is a test of mean 0 of the per-seed differences.
With ``n`` seeds whose differences have standard deviation ``sd`` (from a pilot study), and a
test set that adds ``test_sd`` to the mean however many seeds there are (``two_source``), the
mean difference has standard error ``se(n) = sqrt(sd²/n + test_sd²)``.

Power is that of the two-sided t test at level ``alpha`` (the level after the multiplicity
correction, ``multiplicity.planning_alpha``): the test statistic ``D / se(n)`` follows a
noncentral t with noncentrality ``delta / se(n)`` and Welch-Satterthwaite degrees of freedom
``se(n)^4 / ((sd²/n)² / (n - 1))`` (the test-set part is treated as known). Without test-set
noise that is exactly the paired t test's power (``n - 1`` degrees of freedom, noncentrality
``delta sqrt(n) / sd``: scipy's noncentral t, as G*Power and statsmodels' ``TTestPower``).

* ``minimal_detectable``: the smallest difference found with the given power at ``n`` seeds;
* ``seeds_needed``: the fewest seeds that find ``delta`` with the given power, or ``None`` when
  the test set's own noise makes it unreachable with any number of seeds (only a larger test set
  helps then: the power with infinitely many seeds is that of ``delta / test_sd``).

A pilot's ``sd`` from a few seeds is itself uncertain; ``sd_upper`` gives its one-sided upper
confidence bound (chi-square), to plan for a pessimistic but plausible spread.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

POWER = 0.8
MAX_SEEDS = 1000


def power(delta: float, sd: float, n: int, alpha: float, test_sd: float = 0.0) -> float:
    """Probability that the two-sided test at ``alpha`` finds a true difference ``delta`` with
    ``n`` seeds (see the module docstring)."""
    seed_var = sd**2 / n
    se = np.sqrt(seed_var + test_sd**2)
    if se == 0:
        return 1.0 if delta != 0 else alpha
    df = np.inf if seed_var == 0 else se**4 / (seed_var**2 / (n - 1))
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = abs(delta) / se
    # The far tail, below -critical, underflows to NaN in scipy for large noncentrality; it is
    # then below 1e-20.
    far = np.nan_to_num(stats.nct.cdf(-critical, df, noncentrality), nan=0.0)
    return float(stats.nct.sf(critical, df, noncentrality) + far)


def minimal_detectable(
    sd: float, n: int, alpha: float, target: float = POWER, test_sd: float = 0.0
) -> float:
    """The smallest ``delta`` with ``power(delta, ...) >= target`` at ``n`` seeds."""
    se = np.sqrt(sd**2 / n + test_sd**2)
    if se == 0:
        return 0.0
    high = se
    while power(high, sd, n, alpha, test_sd) < target:
        high *= 2
    return float(
        optimize.brentq(lambda d: power(d, sd, n, alpha, test_sd) - target, 0.0, high, xtol=1e-12)
    )


def seeds_needed(
    delta: float,
    sd: float,
    alpha: float,
    target: float = POWER,
    test_sd: float = 0.0,
    max_seeds: int = MAX_SEEDS,
) -> int | None:
    """The fewest seeds (at least 2) with ``power(delta, ...) >= target``; ``None`` when even
    ``max_seeds`` do not reach it."""
    if power(delta, sd, max_seeds, alpha, test_sd) < target:
        return None
    low, high = 2, max_seeds  # power grows with n: bisect for the first n that reaches target
    if power(delta, sd, low, alpha, test_sd) >= target:
        return low
    while high - low > 1:
        middle = (low + high) // 2
        if power(delta, sd, middle, alpha, test_sd) >= target:
            high = middle
        else:
            low = middle
    return high


def sd_upper(sd: float, df: int, confidence: float = 0.8) -> float:
    """One-sided upper ``confidence`` bound of a standard deviation estimated with ``df`` degrees
    of freedom: ``sd sqrt(df / chi2.ppf(1 - confidence, df))``."""
    return float(sd * np.sqrt(df / stats.chi2.ppf(1 - confidence, df)))
