"""``pclr study plan``: how many seeds a study needs, from a pilot study's ``summary.csv``.

Per metric, the spread of the pilot's per-seed differences to the reference (``summary.csv``'s
``sd`` of each counted comparison) is pooled over the arms (variances weighted by their degrees
of freedom), and the test-set standard deviation (``test_sd``, where the pilot's cells kept
their per-test-item results) is averaged over the arms (root mean square). From these,
``power`` gives the minimal detectable difference at the pilot's seeds and the seeds needed for
a named difference, at the level the multiplicity correction asks of one comparison
(``multiplicity.planning_alpha``: ``alpha / m`` for the pilot's ``m`` comparisons, or
``comparisons`` when the planned study makes another number).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
import pandas as pd
from scipy import stats

from pclr_jax.study import multiplicity, power
from pclr_jax.study.summary_text import excluded_reasons


@dataclasses.dataclass(frozen=True)
class MetricPlan:
    """One metric's plan: pooled ``sd`` of per-seed differences with ``df`` degrees of freedom
    over ``arms`` arms, ``test_sd`` (0 when unknown), the pilot's ``seeds``, the minimal
    detectable difference there, and the seeds needed for ``delta`` (``None``: unreachable),
    also with ``sd`` at its 80% upper confidence bound."""

    metric: str
    arms: int
    sd: float
    df: int
    test_sd: float
    seeds: int
    detectable: float
    needed: int | None
    needed_pessimistic: int | None


def plan_study(
    summary: pd.DataFrame,
    delta: float,
    target: float = power.POWER,
    comparisons: int | None = None,
) -> tuple[list[MetricPlan], float, int]:
    """Per-metric plans from a ``summary.csv`` frame; returns ``(plans, alpha, comparisons)``."""
    counted = summary[
        (summary["kind"] == "difference") & (excluded_reasons(summary) == "") & (summary["n"] >= 2)
    ]
    method = str(counted["correction"].iloc[0]) if len(counted) else "holm"
    comparisons = comparisons or len(counted)
    alpha = multiplicity.planning_alpha(method, comparisons)
    plans = []
    for metric, part in counted.groupby("metric", sort=False):
        dfs = (part["n"] - 1).to_numpy()
        sd = float(np.sqrt(np.sum(dfs * part["sd"].to_numpy() ** 2) / dfs.sum()))
        tests = part["test_sd"].to_numpy(np.float64) if "test_sd" in part else np.array([])
        tests = tests[np.isfinite(tests)]
        test_sd = float(np.sqrt(np.mean(tests**2))) if tests.size else 0.0
        seeds = int(part["n"].max())
        needed = power.seeds_needed(delta, sd, alpha, target, test_sd)
        pessimistic = power.seeds_needed(
            delta, power.sd_upper(sd, int(dfs.sum())), alpha, target, test_sd
        )
        plans.append(
            MetricPlan(
                metric,
                len(part),
                sd,
                int(dfs.sum()),
                test_sd,
                seeds,
                power.minimal_detectable(sd, seeds, alpha, target, test_sd),
                needed,
                pessimistic,
            )
        )
    return plans, alpha, comparisons


def format_plan(
    study_dir, delta: float, target: float = power.POWER, comparisons: int | None = None
) -> str:
    """The ``pclr study plan`` text for the study folder ``study_dir``."""
    path = pathlib.Path(study_dir) / "summary.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `pclr study report` first")
    summary = pd.read_csv(path)
    plans, alpha, m = plan_study(summary, delta, target, comparisons)
    if not plans:
        return "No comparison with 2 or more matched seeds: nothing to plan from."
    method = str(summary["correction"].dropna().iloc[0])
    has_test = any(p.test_sd > 0 for p in plans)

    def seeds(value: int | None) -> str:
        return "not reachable" if value is None else str(value)

    lines = [
        f"Seeds needed to detect a difference of {delta:g} with power {target:g}, two-sided "
        f"paired t test at alpha {alpha:.3g} ({multiplicity.ALPHA:g} / {m} comparisons, "
        f"{multiplicity.NAMES[method]})."
        if method != "none"
        else f"Seeds needed to detect a difference of {delta:g} with power {target:g}, "
        f"two-sided paired t test at alpha {alpha:.3g} (no multiplicity correction).",
        "",
        "| metric | sd of per-seed differences (df) | test-set sd | detectable at "
        f"{plans[0].seeds} seeds | seeds for {delta:g} | with sd at its 80% upper bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in plans:
        test = f"{p.test_sd:.4f}" if p.test_sd > 0 else "-"
        lines.append(
            f"| {p.metric} | {p.sd:.4f} ({p.df}) | {test} | {p.detectable:.4f} | "
            f"{seeds(p.needed)} | {seeds(p.needed_pessimistic)} |"
        )
    lines += [
        "",
        "Method: the per-seed differences to the reference of the pilot's arms, their variances "
        "pooled per metric; power of the paired t test from the noncentral t distribution "
        "(pclr_jax.study.power)"
        + (
            "; the test-set sd does not shrink with seeds, so a difference below about "
            f"{stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target):.1f} test-set sd is not "
            "reachable with any number of seeds on this test set (a larger test set is needed)."
            if has_test
            else "; the pilot's cells kept no per-test-item results, so the test set's own noise "
            "is not in these numbers and they are optimistic."
        ),
        "The pilot's sd comes from few seeds: the last column plans for its one-sided 80% upper "
        "confidence bound (chi-square).",
    ]
    if any(math.isclose(p.sd, 0.0) for p in plans):
        lines.append("A metric with sd 0 at the pilot's seeds has no spread to plan from.")
    return "\n".join(lines)
