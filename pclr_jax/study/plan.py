"""``pclr study plan``: how many seeds a study needs, from a pilot study's ``summary.csv``.

Per metric, the spread of the pilot's per-seed differences to the reference (``summary.csv``'s
``sd`` of each counted comparison) is pooled over the arms (variances weighted by their degrees
of freedom), and the test-set standard deviation (``test_sd``, where the pilot's cells kept
their per-test-item results) is averaged over the arms (root mean square). From these,
``power`` gives the minimal detectable difference at the pilot's seeds and the seeds needed for
a named difference, at the level the multiplicity correction asks of one comparison
(``multiplicity.planning_alpha``: ``alpha / m`` for the pilot's ``m`` comparisons, or
``comparisons`` when the planned study makes another number).

Given the planned study (``planned``: its config, ``pclr study plan --config``), the plan counts
the planned study's comparisons instead: with a pre-registered primary family
(``primary_metrics``), the primary metrics are planned at the level of the primary family's
``len(primary_metrics) x (arms - 1)`` comparisons and the other metrics at the secondary
family's, each family corrected on its own as the report will; without one, every metric at the
level of all ``metrics x (arms - 1)`` comparisons. The detectable difference is then given at the
planned study's number of seeds. Only the metrics both studies report are planned.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pclr_jax.study import multiplicity, power
from pclr_jax.study.spec import StudySpec, is_metric
from pclr_jax.study.summary_text import excluded_reasons


@dataclasses.dataclass(frozen=True)
class MetricPlan:
    """One metric's plan: pooled ``sd`` of per-seed differences with ``df`` degrees of freedom
    over ``arms`` arms, ``test_sd`` (0 when unknown), ``seeds`` (the pilot's, or the planned
    study's), the minimal detectable difference there, and the seeds needed for ``delta``
    (``None``: unreachable), also with ``sd`` at its 80% upper confidence bound."""

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
    metrics: Sequence[str] | None = None,
    seeds: int | None = None,
) -> tuple[list[MetricPlan], float, int]:
    """Per-metric plans from a ``summary.csv`` frame; returns ``(plans, alpha, comparisons)``.

    ``comparisons``: the family's size (default: the pilot's counted comparisons); ``metrics``:
    plan only these (default: every metric of the pilot); ``seeds``: give the detectable
    difference at this many seeds (default: the pilot's)."""
    counted = summary[
        (summary["kind"] == "difference") & (excluded_reasons(summary) == "") & (summary["n"] >= 2)
    ]
    method = str(counted["correction"].iloc[0]) if len(counted) else "holm"
    comparisons = comparisons or len(counted)
    alpha = multiplicity.planning_alpha(method, comparisons)
    if metrics is not None:
        missing = [m for m in metrics if m not in set(counted["metric"])]
        if missing:
            raise ValueError(
                f"the pilot has no comparison of {missing} with 2 or more matched seeds to plan "
                f"from; its metrics: {list(dict.fromkeys(counted['metric']))}"
            )
        counted = counted[counted["metric"].isin(list(metrics))]
    plans = []
    for metric, part in counted.groupby("metric", sort=False):
        dfs = (part["n"] - 1).to_numpy()
        sd = float(np.sqrt(np.sum(dfs * part["sd"].to_numpy() ** 2) / dfs.sum()))
        tests = part["test_sd"].to_numpy(np.float64) if "test_sd" in part else np.array([])
        tests = tests[np.isfinite(tests)]
        test_sd = float(np.sqrt(np.mean(tests**2))) if tests.size else 0.0
        at = seeds or int(part["n"].max())
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
                at,
                power.minimal_detectable(sd, at, alpha, target, test_sd),
                needed,
                pessimistic,
            )
        )
    return plans, alpha, comparisons


def format_plan(
    study_dir,
    delta: float,
    target: float = power.POWER,
    comparisons: int | None = None,
    planned: StudySpec | None = None,
) -> str:
    """The ``pclr study plan`` text for the pilot study folder ``study_dir``; ``planned``: the
    study to plan (its comparison count, families and seeds; see the module docstring), with
    ``comparisons`` overriding the size of its primary (or only) family."""
    path = pathlib.Path(study_dir) / "summary.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `pclr study report` first")
    summary = pd.read_csv(path)
    families = [(None, None, comparisons)]  # (title, metrics, comparisons)
    seeds = None
    if planned is not None:
        seeds = len(planned.seeds)
        primary, secondary = planned.comparisons()
        pilot = summary.loc[summary["kind"] == "difference", "metric"]
        shared = [m for m in dict.fromkeys(pilot) if is_metric(m, planned.evaluation)]
        if planned.primary_metrics:
            others = [m for m in shared if m not in planned.primary_metrics]
            families = [
                (
                    f"Primary family of `{planned.name}` (pre-registered: "
                    f"{', '.join(planned.primary_metrics)} x {_arms(planned)})",
                    list(planned.primary_metrics),
                    comparisons or primary,
                ),
                (
                    f"Secondary, exploratory family of `{planned.name}` (every other metric x "
                    f"{_arms(planned)}, corrected on its own)",
                    others,
                    secondary,
                ),
            ]
        else:
            families = [(f"`{planned.name}` (one family)", shared, comparisons or secondary)]
    sections = []
    for title, metrics, m in families:
        if metrics == []:
            continue
        plans, alpha, m = plan_study(summary, delta, target, m, metrics, seeds)
        if not plans:
            return "No comparison with 2 or more matched seeds: nothing to plan from."
        sections.append(_family_lines(title, plans, alpha, m, summary, delta, target))
    if not sections:
        return "The pilot has no metric of the planned study: nothing to plan from."
    return "\n\n".join(sections)


def _arms(planned: StudySpec) -> str:
    """``"3 arms"``: the arms compared with the reference."""
    arms = len(planned.arms) - 1
    return f"{arms} arm{'' if arms == 1 else 's'}"


def _family_lines(title, plans, alpha, m, summary, delta, target) -> str:
    method = str(summary["correction"].dropna().iloc[0])
    has_test = any(p.test_sd > 0 for p in plans)

    def seeds(value: int | None) -> str:
        return "not reachable" if value is None else str(value)

    level = (
        f"alpha {alpha:.3g} ({multiplicity.ALPHA:g} / {m} comparisons, "
        f"{multiplicity.NAMES[method]})"
        if method != "none"
        else f"alpha {alpha:.3g} (no multiplicity correction)"
    )
    head = (
        f"seeds needed to detect a difference of {delta:g} with power {target:g}, two-sided "
        f"paired t test at {level}."
    )
    lines = [
        f"{title}: {head}" if title else head[0].upper() + head[1:],
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
