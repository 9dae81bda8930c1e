"""Multiplicity control over a study's comparisons (every arm x metric against the reference).

A study makes many comparisons: 4 arms x 17 metrics is 68. At 5% each, about 3 of them exclude 0
by chance when no arm differs at all, so a difference that is "resolved" on its own is not yet a
finding. The report therefore adjusts the p-values over the whole family of comparisons:

* ``holm`` (default): Holm's step-down correction, which controls the family-wise error rate (the
  chance of any false claim in the study) at ``alpha`` under any dependence between the
  comparisons, and is uniformly more powerful than Bonferroni. With p-values sorted ascending,
  ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``.
* ``bh``: Benjamini-Hochberg (``scipy.stats.false_discovery_control``), which controls the false
  discovery rate (the expected share of false claims among the claims) at ``alpha``; valid for
  independent or positively dependent comparisons.
* ``none``: the p-values as they are.

A study may pre-register a primary family (``primary_metrics`` in its config, fixed before any
cell runs): the comparisons of those metrics (every arm but the reference) form one family, every
other comparison a secondary, exploratory one, and the correction is applied within each family
separately (``adjust_within``). A question asked in advance then pays for its own few comparisons,
not for every metric the study happens to report; the secondary family keeps its own control, so
an exploratory finding is still corrected for the comparisons it was found among. Without a
primary family, every comparison is one family.

A comparison with no p-value (a nonzero difference that is the same at every seed and has no
test-set noise to judge it by) stays in the family with p = 1: it counts, and never survives.
"""

from __future__ import annotations

import numpy as np

CORRECTIONS = ("holm", "bh", "none")
PRIMARY, SECONDARY = "primary", "secondary"
ALPHA = 0.05
NAMES = {
    "holm": "Holm's family-wise correction",
    "bh": "the Benjamini-Hochberg false discovery rate correction",
    "none": "no multiplicity correction",
}


def adjust(p_values, method: str = "holm") -> np.ndarray:
    """Adjusted p-values ``(m,)`` of ``p_values`` ``(m,)`` (NaN counts as 1) by ``method``."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; expected one of {list(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    p = np.where(np.isfinite(p), p, 1.0)
    if method == "none" or p.size == 0:
        return p
    if method == "bh":
        from scipy import stats  # here: the command line reads CORRECTIONS without scipy

        return stats.false_discovery_control(p, method="bh")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def adjust_within(p_values, families, method: str = "holm") -> np.ndarray:
    """Adjusted p-values ``(m,)``, each family (``families``: ``(m,)`` labels) adjusted on its
    own by ``method`` (``adjust``)."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    labels = np.asarray(families, dtype=object).reshape(-1)
    if labels.shape != p.shape:
        raise ValueError(f"{labels.size} family labels for {p.size} p-values")
    adjusted = np.empty(p.size)
    for family in dict.fromkeys(labels):
        members = labels == family
        adjusted[members] = adjust(p[members], method)
    return adjusted


def planning_alpha(method: str, comparisons: int, alpha: float = ALPHA) -> float:
    """The level one comparison must reach to be claimed, for planning: ``alpha / m`` under Holm
    (the bar of the smallest p-value, and of every one when a single effect is real) and under
    Benjamini-Hochberg (its bar when one comparison of ``m`` is a true effect), ``alpha`` with no
    correction."""
    return alpha if method == "none" else alpha / max(comparisons, 1)
