"""``pclr study report``: what the finished cells of a study say, with intervals.

Writes into the study workdir:

* ``results.csv``: one row per finished cell and metric (arm, seed, metric, value);
* ``summary.csv``: per arm and metric the mean over seeds and its 95% t interval (``kind=arm``),
  and per arm the paired difference to the reference arm over matched seeds (``kind=difference``:
  mean, interval, p-value, resolved, constant);
* ``report.md``: the budget each arm kept, the two tables, the resolved differences in plain
  words, the failed and missing cells, and the method;
* ``figures/metrics.png`` (per-seed values, means and intervals per arm) and
  ``figures/differences.png`` (paired differences to the reference with their intervals).

The statistics are in ``pclr_jax.study.statistics`` (why t intervals and not a bootstrap).
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import shlex
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pclr_jax.study import cell, statistics
from pclr_jax.study.runner import STUDY_FILE

BUDGET_FIELDS = ("data", "steps", "batch_pairs", "ecgs_seen", "model_input")
# Config fields an arm may override on purpose that change its budget.
BUDGET_OVERRIDES = ("total_steps", "batch_pairs", "data.", "model.n_samples", "model.n_leads")


def load_cells(study_dir: pathlib.Path) -> tuple[list[dict], list[dict]]:
    """The ``result.json`` and ``failed.json`` contents of every cell of the study."""
    results, failures = [], []
    for directory in sorted((study_dir / "cells").glob("*/seed_*")):
        if (result := cell.read_result(directory)) is not None:
            results.append(result)
        elif (directory / cell.FAILED).exists():
            failures.append(json.loads((directory / cell.FAILED).read_text()))
    return results, failures


def metric_order(metrics: Sequence[str], evaluation: dict) -> list[str]:
    """Retrieval first, then the tasks in the study's order, each by label-set size."""
    columns = [t.rpartition(":")[0] or t for t in evaluation["tasks"]]
    sizes = [str(s) for s in evaluation["label_sizes"]]

    def key(metric: str):
        if metric.startswith("retrieval_"):
            return (0, metric, 0)
        name, _, size = metric.partition("@")
        task = next((i for i, c in enumerate(columns) if name.startswith(f"{c}_")), len(columns))
        return (1 + task, name, sizes.index(size) if size in sizes else len(sizes))

    return sorted(set(metrics), key=key)


def summarize(results_frame: pd.DataFrame, arms: Sequence[str], reference: str) -> pd.DataFrame:
    """``summary.csv``'s rows (see the module docstring)."""
    rows = []
    for metric, part in results_frame.groupby("metric", sort=False):
        by_arm = {
            arm: dict(zip(values["seed"], values["value"], strict=True))
            for arm, values in part.groupby("arm")
        }
        for arm in arms:
            seeds = by_arm.get(arm, {})
            interval = statistics.t_interval(list(seeds.values()))
            rows.append(dict(kind="arm", arm=arm, metric=metric, **_fields(interval)))
            if arm != reference and seeds and reference in by_arm:
                difference = statistics.paired_difference(seeds, by_arm[reference])
                rows.append(
                    dict(
                        kind="difference",
                        arm=arm,
                        metric=metric,
                        **_fields(difference),
                        p_value=difference.p_value,
                        resolved=difference.resolved,
                        constant=difference.constant,
                    )
                )
    return pd.DataFrame(rows)


def _fields(interval: statistics.Interval) -> dict:
    return dict(
        n=interval.n, mean=interval.mean, low=interval.low, high=interval.high, sd=interval.sd
    )


def _cell(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "-"
    sign = "+" if signed else ""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:{sign}.3f} (1 seed)"
    if low == high and mean != 0:
        return f"{mean:{sign}.3f} (same at every seed)"
    return f"{mean:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]"


def _budget_section(study: dict, results: list[dict], arms: list[str], reference: str) -> list:
    budgets = {}
    for result in results:  # what the cells actually spent; the first finished seed speaks
        budgets.setdefault(result["arm"], result["budget"])
    overrides = {a["name"]: a["overrides"] for a in study["arms"]}
    lines = [
        "| arm | data | steps | pairs per step | ECGs seen | input | budget |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    notes = []
    base = budgets.get(reference)
    for arm in arms:
        budget = budgets.get(arm)
        if budget is None:
            lines.append(f"| {arm} | | | | | | no finished cell |")
            continue
        differing = [f for f in BUDGET_FIELDS if base is not None and budget[f] != base[f]]
        unequal_seeds = {r["budget"]["steps"] for r in results if r["arm"] == arm} != {
            budget["steps"]
        }
        verdict = "equal" if not differing else "differs: " + ", ".join(differing)
        if unequal_seeds:
            verdict += "; seeds trained for different step counts"
        lines.append(
            f"| {arm} | {budget['data']} | {budget['steps']:,} | {budget['batch_pairs']} | "
            f"{budget['ecgs_seen']:,} | {budget['model_input']} | {verdict} |"
        )
        if differing:
            by_design = [
                k for k in overrides.get(arm, {}) if any(k.startswith(p) for p in BUDGET_OVERRIDES)
            ]
            reason = (
                f"set by the arm's overrides ({', '.join(by_design)})"
                if by_design
                else "NOT set by the arm: the cell could not keep the budget"
            )
            notes.append(f"- **{arm}** does not keep {reference}'s budget ({reason}).")
    if not notes:
        notes.append(
            f"- Every arm with a finished cell kept {reference}'s budget: same data, steps, "
            "examples seen and evaluation."
        )
    return lines + [""] + notes


def _plain_words(summary: pd.DataFrame, reference: str, confidence: float) -> list[str]:
    differences = summary[summary["kind"] == "difference"]
    if differences.empty:
        return ["No arm has a finished cell at a seed the reference also finished."]
    lines = []
    for arm, part in differences.groupby("arm", sort=False):
        if ((part["mean"] == 0) & (part["sd"].fillna(0) == 0)).all():
            lines.append(
                f"- **{arm}** vs {reference}: identical at every matched seed (every difference "
                "exactly 0): in this set-up the two arms compute the same thing."
            )
            continue
        if (part["n"] < 2).all():
            lines.append(f"- **{arm}** vs {reference}: fewer than 2 matched seeds, no interval.")
            continue
        resolved = part[part["resolved"].astype(bool)]
        constant = part[part["constant"].astype(bool) & (part["mean"] != 0)]
        said = [
            f"{'higher' if r.mean > 0 else 'lower'} {r.metric} "
            f"({_cell(r.mean, r.low, r.high, signed=True)})"
            for r in resolved.itertuples()
        ]
        noise = len(part) - len(resolved) - len(constant)
        text = f"- **{arm}** vs {reference}: "
        text += ("resolved: " + "; ".join(said) + ". ") if said else "no resolved difference. "
        text += f"Within noise on {noise} of {len(part)} metrics."
        if len(constant):
            text += " The same nonzero difference at every matched seed, so no spread to judge "
            text += "it by (not counted as resolved): " + "; ".join(
                f"{r.metric} {r.mean:+.3f} at {r.n} seeds" for r in constant.itertuples()
            )
            text += "."
        lines.append(text)
    total = int((differences["n"] >= 2).sum())
    lines.append(
        f"\n{total} comparisons at {confidence:.0%} each: even if no arm differed from "
        f"{reference}, about {total * (1 - confidence):.1f} of them would exclude 0 by chance; "
        "read a single resolved difference on one metric with that in mind."
    )
    return lines


def _table(summary: pd.DataFrame, kind: str, arms: list[str], metrics: list[str]) -> list:
    part = summary[summary["kind"] == kind]
    columns = [a for a in arms if a in set(part["arm"])]
    lines = ["| metric | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for metric in metrics:
        cells = []
        for arm in columns:
            row = part[(part["arm"] == arm) & (part["metric"] == metric)]
            if row.empty:
                cells.append("-")
                continue
            r = row.iloc[0]
            text = _cell(r["mean"], r["low"], r["high"], signed=kind == "difference")
            cells.append(f"**{text}**" if kind == "difference" and bool(r["resolved"]) else text)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines


def plot_figures(frame, summary, arms, metrics, reference, out_dir: pathlib.Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, name in (("arm", "metrics.png"), ("difference", "differences.png")):
        part = summary[summary["kind"] == kind]
        if part.empty:
            continue
        shown = [a for a in arms if a in set(part["arm"])]
        columns = min(4, len(metrics))
        rows = -(-len(metrics) // columns)
        figure, axes = plt.subplots(
            rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False
        )
        for ax, metric in zip(axes.flat, metrics, strict=False):
            for x, arm in enumerate(shown):
                row = part[(part["arm"] == arm) & (part["metric"] == metric)]
                if row.empty:
                    continue
                r = row.iloc[0]
                error = [[r["mean"] - r["low"]], [r["high"] - r["mean"]]]
                ax.errorbar(x, r["mean"], yerr=error, fmt="o", color="k", capsize=3)
                if kind == "arm":
                    seeds = frame[(frame["arm"] == arm) & (frame["metric"] == metric)]["value"]
                    ax.plot(np.full(len(seeds), x + 0.15), seeds, ".", color="tab:blue")
            if kind == "difference":
                ax.axhline(0.0, color="tab:red", linewidth=0.8)
            ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right", fontsize=7)
            ax.set_title(metric, fontsize=8)
        for ax in list(axes.flat)[len(metrics) :]:
            ax.set_visible(False)
        title = (
            "per arm: seeds (dots), mean and 95% t interval"
            if kind == "arm"
            else f"paired difference to {reference} over matched seeds, 95% t interval"
        )
        figure.suptitle(title, fontsize=9)
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=110)
        plt.close(figure)
        paths.append(out_dir / name)
    return paths


def _shell_quote(text: str) -> str:
    """``text`` quoted for a shell: double quotes when that needs no escapes (readable for
    ``base.model.widths=(32, 64)`` and ``data.config='x'``), else ``shlex.quote``."""
    if not any(c in text for c in '"$`\\!'):
        return f'"{text}"' if any(c in text for c in " '()") else text
    return shlex.quote(text)


def write_report(study_dir, reference: str | None = None) -> pathlib.Path:
    """Aggregates whatever cells have finished; returns the path of ``report.md``."""
    study_dir = pathlib.Path(study_dir)
    recorded = json.loads((study_dir / STUDY_FILE).read_text())
    study, source = recorded["study"], recorded["source"]
    arms = [a["name"] for a in study["arms"]]
    reference = reference or study["reference_arm"]
    if reference not in arms:
        raise ValueError(f"reference arm {reference!r} is not an arm: {arms}")
    results, failures = load_cells(study_dir)
    frame = pd.DataFrame(
        [
            dict(arm=r["arm"], seed=r["seed"], metric=m, value=v)
            for r in results
            for m, v in r["metrics"].items()
        ],
        columns=["arm", "seed", "metric", "value"],
    )
    metrics = metric_order(frame["metric"].unique(), study["evaluation"])
    frame["order"] = frame["metric"].map({m: i for i, m in enumerate(metrics)})
    frame["arm_order"] = frame["arm"].map({a: i for i, a in enumerate(arms)})
    frame = frame.sort_values(["arm_order", "seed", "order"]).drop(columns=["order", "arm_order"])
    frame.to_csv(study_dir / "results.csv", index=False)
    summary = summarize(frame, arms, reference) if len(frame) else pd.DataFrame()
    summary.to_csv(study_dir / "summary.csv", index=False)

    done = {(r["arm"], r["seed"]) for r in results}
    failed = {(f["arm"], f["seed"]) for f in failures}
    missing = [(a, s) for s in study["seeds"] for a in arms if (a, s) not in done | failed]
    evaluation = study["evaluation"]
    wall = sum(r["train_wall_s"] + r["eval_wall_s"] for r in results)
    machine = results[0]["machine"] if results else {}
    command = f"pclr study run --config {source['config']} --workdir DIR" + "".join(
        f" --set {_shell_quote(s)}" for s in source.get("set", [])
    )
    lines = [
        f"# Study `{study['name']}`",
        "",
        study["description"],
        "",
        f"- Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`pclr study report`; reference arm: "
        f"`{reference}`; seeds: {', '.join(map(str, study['seeds']))}.",
        f"- Command: `{command}`.",
        f"- Cells: {len(done)} finished, {len(failed)} failed, {len(missing)} not run "
        f"(of {len(arms) * len(study['seeds'])}); {wall / 60:.1f} min of cell wall time in all.",
    ]
    if machine:
        lines.append(
            f"- Machine: {machine['cpu_model']} ({' '.join(machine['cpu_flags'])}), "
            f"{machine['cores']} cores, {machine['memory_gib']:.0f} GiB, "
            f"JAX {machine['jax']} on {machine.get('jax_backend', 'an unrecorded backend')}."
        )
        loads = [
            r["machine"]["load_average_1min"]
            for r in results
            if "load_average_1min" in r["machine"]
        ]
        if loads:
            shared = max(loads) > machine["cores"]
            lines.append(
                f"- Load average (1 min) at the end of the cells: {min(loads):.1f} to "
                f"{max(loads):.1f} on {machine['cores']} cores"
                + (": the machine was shared, wall times are not speed figures." if shared else ".")
            )
    lines += [
        f"- Evaluation (the same for every arm): patient retrieval among the "
        f"`{evaluation['test_split']}` ECGs; linear probes of {', '.join(evaluation['tasks'])} "
        f"fitted on {', '.join(map(str, evaluation['label_sizes']))} ECGs of "
        f"`{evaluation['fit_split']}` ({evaluation['repeats']} label draws per size below "
        f"'all', averaged per cell) and scored on `{evaluation['test_split']}`.",
        "",
        "## Budget",
        "",
        *_budget_section(study, results, arms, reference),
        "",
        "## Metrics per arm: mean over seeds [95% t interval]",
        "",
        *(_table(summary, "arm", arms, metrics) if len(summary) else ["No finished cell."]),
        "",
        f"## Difference to `{reference}` over matched seeds: mean [95% paired t interval]",
        "",
        "Bold: the interval excludes 0 (resolved). Higher is better for every metric.",
        "",
        *(_table(summary, "difference", arms, metrics) if len(summary) else ["-"]),
        "",
        "## In plain words",
        "",
        *(
            _plain_words(summary, reference, statistics.CONFIDENCE)
            if len(summary)
            else ["No finished cell yet."]
        ),
        "",
    ]
    skipped = sorted({f"{r['arm']}: {s}" for r in results for s in r.get("probe_skipped", [])})
    if skipped:
        lines += ["## Probe fits that could not be made", ""]
        lines += [f"- {s}" for s in skipped] + [""]
    if failures or missing:
        lines += ["## Cells that did not finish", ""]
        lines += [f"- {f['arm']} seed {f['seed']}: failed: {f['error']}" for f in failures]
        lines += [f"- {a} seed {s}: not run (yet)" for a, s in missing]
        lines.append("")
    lines += [
        "## Method",
        "",
        "Each cell trains the base config with the arm's overrides at one seed and evaluates "
        "the trained encoder; seed s gives every arm the same initialisation, batch order and "
        "probe label draws. Per arm, the interval is Student's t over the seeds "
        "(mean ± t(0.975, n-1)·sd/√n). Against the reference, the per-seed differences are "
        "paired by seed and the interval is the paired t interval (scipy.stats.ttest_rel); a "
        "difference is resolved when it excludes 0, and a nonzero difference that is the "
        "same at every seed (zero spread, as a discrete metric at few seeds can give) is "
        "reported as such and not counted as resolved. With 3-5 seeds the t interval is the "
        "honest choice: a bootstrap can only resample the few seeds there are and its "
        "percentile interval covers much less than 95%.",
        "",
        "Files: `results.csv` (every cell's metrics), `summary.csv` (the tables above), "
        "`figures/metrics.png`, `figures/differences.png`.",
        "",
    ]
    if len(summary):
        plot_figures(frame, summary, arms, metrics, reference, study_dir / "figures")
    path = study_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
