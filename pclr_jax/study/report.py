"""``pclr study report``: what the finished cells of a study say, with intervals.

Writes into the study workdir (or, with ``publish``, into a folder to publish, with the study
and every cell's ``config.json``, ``result.json`` and ``items.npz`` beside it):

* ``results.csv``: one row per finished cell and metric (arm, seed, metric, value);
* ``summary.csv``: per arm and metric the mean over seeds and its 95% interval (``kind=arm``),
  and per arm the paired difference to the reference arm over matched seeds (``kind=difference``),
  with the interval over seeds and test set where the cells kept their per-test-item results
  (``two_source``), the seed-only t interval beside it, p-values adjusted over the study's
  comparisons (``multiplicity``; within the primary and the secondary family separately, with a
  ``family`` column, when the study pre-registered ``primary_metrics``) and whether each
  survives;
* ``summary.md``: those conclusions in plain words, generated from ``summary.csv``
  (``summary_text``);
* ``report.md``: the budget each arm kept (every config field), the tables, the plain words, the
  failed and missing cells, and the method;
* ``figures/metrics.png`` (per-seed values, means and intervals per arm) and
  ``figures/differences.png`` (paired differences to the reference with their intervals).

A folder with ``results.csv`` but no ``study.json`` (a study published before the cells were
kept) gets ``summary.csv`` and ``summary.md`` from its ``results.csv``: seed-only statistics.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import pathlib
import shlex
import shutil
from collections.abc import Sequence

import ml_collections
import numpy as np
import pandas as pd

from pclr_jax.study import cell, multiplicity, statistics, two_source
from pclr_jax.study.budget import config_differences
from pclr_jax.study.items import ITEMS, read_items
from pclr_jax.study.runner import STUDY_FILE
from pclr_jax.study.spec import study_from_config
from pclr_jax.study.summary_text import (
    SEEDS,
    SEEDS_AND_TEST,
    excluded_reasons,
    plain_words,
    summary_markdown,
)

SUMMARY_MD = "summary.md"
N_BOOTSTRAP = 1000
# Published beside the report, per cell.
CELL_FILES = (cell.CONFIG, cell.RESULT, cell.FAILED, ITEMS)

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


def identical_arms(results_frame: pd.DataFrame, arms: Sequence[str], reference: str) -> dict:
    """``{arm: reason}`` for arms identical to the reference by construction: every metric equal
    at every matched seed (at least two), so every difference is exactly 0."""
    wide = results_frame.pivot_table(index=["metric", "seed"], columns="arm", values="value")
    found = {}
    for arm in arms:
        if arm == reference or arm not in wide or reference not in wide:
            continue
        pairs = wide[[arm, reference]].dropna()
        seeds = pairs.index.get_level_values("seed").nunique()
        if seeds >= 2 and (pairs[arm] == pairs[reference]).all():
            found[arm] = (
                f"identical to {reference} at every matched seed on every metric: the same "
                "function in this set-up"
            )
    return found


def _test_deviations(metric: str, items: dict, n_bootstrap: int, seed: int) -> dict:
    """``{(arm, seed): (B,) deviations}`` of one metric, or ``{}`` when the cells did not keep
    comparable per-test-item results (``two_source.metric_deviations``)."""
    cells = {
        key: cell_items.metrics[metric]
        for key, cell_items in items.items()
        if metric in cell_items.metrics
    }
    if len(cells) < 2 or not two_source.same_test_items(cells):
        return {}
    patients = [items[key].patient_id for key in cells]
    if any(not np.array_equal(p, patients[0]) for p in patients):
        return {}
    return two_source.metric_deviations(cells, patients[0], n_bootstrap, seed, metric)


def _interval(values: dict, deviations: dict, keys: list) -> tuple:
    """The interval used (over seeds and test set when every seed has deviations) and the
    seed-only t interval, of the values at ``keys`` (seeds)."""
    seed_only = statistics.t_interval([values[k] for k in keys])
    if keys and all(k in deviations for k in keys):
        matrix = np.stack([deviations[k] for k in keys], axis=1)
        return two_source.two_source_interval([values[k] for k in keys], matrix), seed_only
    return seed_only, seed_only


def summarize(
    results_frame: pd.DataFrame,
    arms: Sequence[str],
    reference: str,
    items: dict | None = None,
    *,
    correction: str = "holm",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    primary_metrics: Sequence[str] = (),
    baselines: Sequence[str] = (),
) -> pd.DataFrame:
    """``summary.csv``'s rows (see the module docstring).

    ``items``: ``{(arm, seed): CellItems}`` of the cells that kept them; with none, every
    interval is over the seeds only. ``primary_metrics``: the study's pre-registered primary
    family; with none, every comparison is one family (and there is no ``family`` column).
    ``baselines``: cells shown for scale (``cell.BASELINE_ARM``): an ``arm`` row each, no
    difference, no comparison.
    """
    items = items or {}
    excluded = identical_arms(results_frame, arms, reference)
    rows = []
    for metric, part in results_frame.groupby("metric", sort=False):
        by_arm = {
            arm: dict(zip(values["seed"], values["value"], strict=True))
            for arm, values in part.groupby("arm")
        }
        deviations = _test_deviations(metric, items, n_bootstrap, seed)
        reference_values = by_arm.get(reference, {})
        for arm in [*arms, *baselines]:
            seeds = by_arm.get(arm, {})
            if arm in baselines and not seeds:
                continue
            arm_deviations = {s: deviations[(arm, s)] for s in seeds if (arm, s) in deviations}
            interval, seed_only = _interval(seeds, arm_deviations, sorted(seeds))
            rows.append(
                dict(
                    kind="arm",
                    arm=arm,
                    metric=metric,
                    **_fields(interval, seed_only, metric_range(metric)),
                )
            )
            if arm == reference or arm in baselines or not seeds or not reference_values:
                continue
            matched = sorted(
                s
                for s in set(seeds) & set(reference_values)
                if np.isfinite(seeds[s]) and np.isfinite(reference_values[s])
            )
            differences = {s: seeds[s] - reference_values[s] for s in matched}
            paired = {
                s: deviations[(arm, s)] - deviations[(reference, s)]
                for s in matched
                if (arm, s) in deviations and (reference, s) in deviations
            }
            interval, seed_only = _interval(differences, paired, matched)
            rows.append(
                dict(
                    kind="difference",
                    arm=arm,
                    metric=metric,
                    **_fields(interval, seed_only),
                    p_value=interval.p_value,
                    seed_p_value=seed_only.p_value,
                    resolved=interval.resolved,
                    constant=interval.constant,
                    excluded=excluded.get(arm, ""),
                )
            )
    summary = pd.DataFrame(rows)
    summary["reference"] = reference
    return _adjust(summary, correction, primary_metrics)


def _adjust(
    summary: pd.DataFrame, correction: str, primary_metrics: Sequence[str] = ()
) -> pd.DataFrame:
    """Adds ``p_adjusted``, ``survives`` and ``correction`` over the counted comparisons, and
    with ``primary_metrics`` a ``family`` column (``primary`` or ``secondary`` on the difference
    rows), each family adjusted on its own."""
    summary = summary.assign(p_adjusted=np.nan, survives=False, correction=correction)
    if "excluded" not in summary:
        return summary
    differences = summary["kind"] == "difference"
    counted = differences & (excluded_reasons(summary) == "")
    families = np.full(len(summary), multiplicity.PRIMARY, dtype=object)
    if primary_metrics:
        primary = summary["metric"].isin(list(primary_metrics)).to_numpy()
        families[~primary] = multiplicity.SECONDARY
        summary["family"] = np.where(differences, families, "")
    adjusted = multiplicity.adjust_within(
        summary.loc[counted, "p_value"], families[counted.to_numpy()], correction
    )
    summary.loc[counted, "p_adjusted"] = adjusted
    summary.loc[counted, "survives"] = adjusted < multiplicity.ALPHA
    return summary


def metric_range(metric: str) -> tuple[float, float]:
    """The values a metric can take: ``[0, 1]`` for retrieval accuracies and AUROCs, ``(-inf,
    1]`` for R^2, unbounded otherwise."""
    if metric.startswith("retrieval_") or "_auroc@" in metric:
        return 0.0, 1.0
    if "_r2@" in metric:
        return -math.inf, 1.0
    return -math.inf, math.inf


def _fields(
    interval: statistics.Interval,
    seed_only: statistics.Interval,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> dict:
    """A row's interval fields; an arm's intervals are cut to its metric's ``bounds`` (an AUROC
    interval ends at 1: the metric cannot exceed it, so the cut loses no coverage)."""
    low, high = bounds

    def clip(value: float) -> float:
        return min(max(value, low), high) if math.isfinite(value) else value

    return dict(
        n=interval.n,
        mean=interval.mean,
        low=clip(interval.low),
        high=clip(interval.high),
        sd=interval.sd,
        test_sd=interval.test_sd,
        interval=SEEDS if math.isnan(interval.test_sd) else SEEDS_AND_TEST,
        seed_low=clip(seed_only.low),
        seed_high=clip(seed_only.high),
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


def cell_configs(study_dir: pathlib.Path, study: dict, results: list[dict]) -> dict:
    """``{(arm, seed): resolved config}`` of the finished cells: the ``config.json`` each cell
    wrote, or for cells run before configs were recorded the one ``study.json`` resolves to
    (marked by ``None`` in ``recorded``). Returns ``(configs, recorded)``."""
    spec = None
    configs, recorded = {}, {}
    for result in results:
        key = (result["arm"], result["seed"])
        config = cell.read_config(cell.cell_directory(study_dir, *key))
        recorded[key] = config is not None
        if config is None:
            if spec is None:
                fields = ml_collections.ConfigDict({k: v for k, v in study.items() if k != "base"})
                fields.base = ml_collections.ConfigDict(study["base"])
                fields.arms = [(a["name"], a["overrides"]) for a in study["arms"]]
                spec = study_from_config(fields)
            config = json.loads(spec.cell_config(*key).to_json_best_effort())
        configs[key] = config
    return configs, recorded


def formulation_lines(results: list[dict]) -> list[str]:
    """The report's line on the formulations the cells ran (``machine.formulations``, recorded
    since ``conv_impl="auto"`` could resolve differently per CPU class): one line naming them, or
    the count of cells per combination when they differ, or none when no cell recorded them."""
    counts = collections.Counter(
        "not recorded"
        if (recorded := result.get("machine", {}).get("formulations")) is None
        else ", ".join(f"{key} {value}" for key, value in sorted(recorded.items()))
        for result in results
    )
    if set(counts) <= {"not recorded"}:
        return []
    if len(counts) == 1:
        return [f"- Formulations (every cell): {next(iter(counts))}."]
    listed = "; ".join(f"{name}: {n} cells" for name, n in sorted(counts.items()))
    return [
        f"- Formulations DIFFER between cells (float rounding only, but not one program): {listed}."
    ]


def _budget_section(
    study: dict, results: list[dict], arms: list[str], reference: str, configs: tuple
) -> list:
    configs, recorded = configs
    budgets, first_cell = {}, {}
    for result in results:  # what the cells actually spent; the first finished seed speaks
        budgets.setdefault(result["arm"], result["budget"])
        first_cell.setdefault(result["arm"], (result["arm"], result["seed"]))
    overrides = {a["name"]: a["overrides"] for a in study["arms"]}
    lines = [
        "| arm | data | steps | pairs per step | ECGs seen | input | budget "
        "| other config fields |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    notes = []
    base = budgets.get(reference)
    for arm in arms:
        budget = budgets.get(arm)
        if budget is None:
            lines.append(f"| {arm} | | | | | | no finished cell | |")
            continue
        differing = [f for f in BUDGET_FIELDS if base is not None and budget[f] != base[f]]
        unequal_seeds = {r["budget"]["steps"] for r in results if r["arm"] == arm} != {
            budget["steps"]
        }
        verdict = "equal" if not differing else "differs: " + ", ".join(differing)
        if unequal_seeds:
            verdict += "; seeds trained for different step counts"
        fields = _config_verdict(arm, reference, overrides, configs, first_cell, notes)
        lines.append(
            f"| {arm} | {budget['data']} | {budget['steps']:,} | {budget['batch_pairs']} | "
            f"{budget['ecgs_seen']:,} | {budget['model_input']} | {verdict} | {fields} |"
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
            "examples seen and evaluation, and every config field equal except the arms' "
            "overrides."
        )
    if recorded and not all(recorded.values()):
        notes.append(
            "- Cells run before configs were recorded: their configs are resolved from "
            "study.json (the study as run), not read from the cells."
        )
    return lines + [""] + notes


def _config_verdict(arm, reference, overrides, configs, first_cell, notes) -> str:
    """The budget table's last column: the arm's config fields (every one except the seed and
    the two arms' overrides) against the reference's, and its cells against each other."""
    if reference not in first_cell:
        return ""
    ignored = [*overrides.get(arm, {}), *overrides.get(reference, {})]
    own = configs[first_cell[arm]]
    differing = config_differences(configs[first_cell[reference]], own, ignored)
    if differing and arm != reference:
        notes.append(
            f"- **{arm}**'s config differs from {reference}'s beyond the overrides: "
            + "; ".join(differing)
            + "."
        )
    between_seeds = sorted(
        {
            line
            for key, config in configs.items()
            if key[0] == arm
            for line in config_differences(own, config)
        }
    )
    if between_seeds:
        notes.append(f"- **{arm}**'s cells differ from each other in: {'; '.join(between_seeds)}.")
    if not differing and not between_seeds:
        return "same except overrides" if arm != reference else "reference"
    parts = [f.partition(" ")[0] for f in differing] + [
        f"between seeds: {f.partition(' ')[0]}" for f in between_seeds
    ]
    return "differ: " + ", ".join(parts)


def _table(
    summary: pd.DataFrame, kind: str, arms: list[str], metrics: list[str], primary=()
) -> list:
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
            survives = kind == "difference" and str(r["survives"]) == "True"
            cells.append(f"**{text}**" if survives else text)
        name = f"{metric} (primary)" if metric in primary else metric
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
            "per arm: seeds (dots), mean and 95% interval"
            if kind == "arm"
            else f"paired difference to {reference} over matched seeds, 95% interval"
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


def _results_frame(results: list[dict], arms: list[str], metrics: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            dict(arm=r["arm"], seed=r["seed"], metric=m, value=v)
            for r in results
            for m, v in r["metrics"].items()
        ],
        columns=["arm", "seed", "metric", "value"],
    )
    frame["order"] = frame["metric"].map({m: i for i, m in enumerate(metrics)})
    frame["arm_order"] = frame["arm"].map({a: i for i, a in enumerate(arms)})
    return frame.sort_values(["arm_order", "seed", "order"]).drop(columns=["order", "arm_order"])


def summarize_results_only(folder, reference: str, correction: str = "holm") -> pathlib.Path:
    """``summary.csv`` and ``summary.md`` of a folder that holds only ``results.csv`` (a study
    published before the cells were kept): seed-only statistics; rows of the arm
    ``random_init`` are the untrained baseline (shown, not compared). Returns ``summary.md``'s
    path."""
    folder = pathlib.Path(folder)
    frame = pd.read_csv(folder / "results.csv")
    arms = [a for a in dict.fromkeys(frame["arm"]) if a != cell.BASELINE_ARM]
    baselines = [cell.BASELINE_ARM] if (frame["arm"] == cell.BASELINE_ARM).any() else []
    if reference not in arms:
        raise ValueError(f"reference arm {reference!r} is not in results.csv: {arms}")
    summary = summarize(frame, arms, reference, correction=correction, baselines=baselines)
    summary.to_csv(folder / "summary.csv", index=False)
    path = folder / SUMMARY_MD
    path.write_text(summary_markdown(pd.read_csv(folder / "summary.csv"), folder.name))
    return path


def publish_cells(study_dir: pathlib.Path, out: pathlib.Path) -> None:
    """Copies ``study.json`` and each cell's small files (``CELL_FILES``) to ``out``."""
    shutil.copy2(study_dir / STUDY_FILE, out / STUDY_FILE)
    for directory in sorted((study_dir / "cells").glob("*/seed_*")):
        target = out / directory.relative_to(study_dir)
        for name in CELL_FILES:
            if (directory / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(directory / name, target / name)


def write_report(
    study_dir,
    reference: str | None = None,
    *,
    correction: str = "holm",
    n_bootstrap: int = N_BOOTSTRAP,
    publish=None,
) -> pathlib.Path:
    """Aggregates whatever cells have finished; returns the path of ``report.md``.

    ``correction``: ``holm``, ``bh`` or ``none`` (``multiplicity``); ``n_bootstrap``: test-patient
    resamples of the intervals over seeds and test set; ``publish``: a folder to write the report
    into, with ``study.json`` and every cell's config, result and items (docs/studies/NAME).
    A folder without ``study.json`` is summarised from its ``results.csv``
    (``summarize_results_only``; ``reference`` needed) and ``summary.md``'s path returned.
    """
    study_dir = pathlib.Path(study_dir)
    if not (study_dir / STUDY_FILE).exists() and (study_dir / "results.csv").exists():
        if reference is None:
            raise ValueError(f"{study_dir} holds no {STUDY_FILE}: name the reference arm")
        return summarize_results_only(study_dir, reference, correction)
    out = pathlib.Path(publish) if publish else study_dir
    if out.resolve() != study_dir.resolve():
        out.mkdir(parents=True, exist_ok=True)
        publish_cells(study_dir, out)
    recorded = json.loads((study_dir / STUDY_FILE).read_text())
    study, source = recorded["study"], recorded["source"]
    arms = [a["name"] for a in study["arms"]]
    primary = list(study.get("primary_metrics", []))
    reference = reference or study["reference_arm"]
    if reference not in arms:
        raise ValueError(f"reference arm {reference!r} is not an arm: {arms}")
    results, failures = load_cells(study_dir)
    baseline_results = [r for r in results if r["arm"] == cell.BASELINE_ARM]
    results = [r for r in results if r["arm"] != cell.BASELINE_ARM]
    baselines = [cell.BASELINE_ARM] if baseline_results else []
    metrics = metric_order({m for r in results for m in r["metrics"]}, study["evaluation"])
    frame = _results_frame(results + baseline_results, arms + baselines, metrics)
    frame.to_csv(out / "results.csv", index=False)
    items = {
        (r["arm"], r["seed"]): found
        for r in results + baseline_results
        if (found := read_items(cell.cell_directory(study_dir, r["arm"], r["seed"]))) is not None
    }
    summary = (
        summarize(
            frame,
            arms,
            reference,
            items,
            correction=correction,
            n_bootstrap=n_bootstrap,
            primary_metrics=primary,
            baselines=baselines,
        )
        if len(frame)
        else pd.DataFrame()
    )
    summary.to_csv(out / "summary.csv", index=False)
    if len(summary):  # generated from the file as written, as the README test reads it
        summary = pd.read_csv(out / "summary.csv")
        (out / SUMMARY_MD).write_text(summary_markdown(summary, out.resolve().name))

    done = {(r["arm"], r["seed"]) for r in results}
    failed = {(f["arm"], f["seed"]) for f in failures}
    missing = [(a, s) for s in study["seeds"] for a in arms if (a, s) not in done | failed]
    baseline_seeds = sorted(r["seed"] for r in baseline_results)
    missing += [
        (cell.BASELINE_ARM, s)
        for s in study["seeds"]
        if s not in baseline_seeds and (cell.BASELINE_ARM, s) not in failed
    ]
    evaluation = study["evaluation"]
    wall = sum(r["train_wall_s"] + r["eval_wall_s"] for r in results + baseline_results)
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
        f"- Cells: {len(done)} finished, {len(failed)} failed, "
        f"{sum(a != cell.BASELINE_ARM for a, _ in missing)} not run "
        f"(of {len(arms) * len(study['seeds'])}); untrained baseline (`{cell.BASELINE_ARM}`) "
        f"at {len(baseline_seeds)} of {len(study['seeds'])} seeds; {wall / 60:.1f} min of cell "
        "wall time in all.",
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
    lines += formulation_lines(results)
    two_sources = len(summary) and (summary["interval"] == SEEDS_AND_TEST).any()
    over = "seeds and test set" if two_sources else "seeds only"
    lines += [
        f"- Evaluation (the same for every arm): patient retrieval among the "
        f"`{evaluation['test_split']}` ECGs; linear probes of {', '.join(evaluation['tasks'])} "
        f"fitted on {', '.join(map(str, evaluation['label_sizes']))} ECGs of "
        f"`{evaluation['fit_split']}` ({evaluation['repeats']} label draws per size below "
        f"'all', averaged per cell) and scored on `{evaluation['test_split']}`.",
        "",
        "## Budget",
        "",
        *_budget_section(study, results, arms, reference, cell_configs(study_dir, study, results)),
        "",
        f"## Metrics per arm: mean over seeds [95% interval over {over}]",
        "",
        *(
            [
                f"`{cell.BASELINE_ARM}`: the untrained encoder, the weights every arm starts "
                "from at each seed, evaluated the same way (for scale; no arm is compared with "
                "it).",
                "",
            ]
            if baselines
            else []
        ),
        *(
            _table(summary, "arm", arms + baselines, metrics)
            if len(summary)
            else ["No finished cell."]
        ),
        "",
        f"## Difference to `{reference}` over matched seeds: mean [95% interval over {over}]",
        "",
        "Bold: the difference survives "
        + (
            f"{multiplicity.NAMES[correction]} within its family: the pre-registered primary "
            f"family ({', '.join(primary)} x every arm, marked primary) and the secondary family "
            "(every other metric), each corrected on its own."
            if primary
            else f"{multiplicity.NAMES[correction]} over the study's comparisons."
        )
        + " Higher is better for every metric. The seed-only t intervals and every p-value: "
        "`summary.md`.",
        "",
        *(_table(summary, "difference", arms, metrics, primary) if len(summary) else ["-"]),
        "",
        "## In plain words",
        "",
        plain_words(summary) if len(summary) else "No finished cell yet.",
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
        "probe label draws. Each seed's baseline cell evaluates, untrained, the weights the arms "
        f"start from (`{cell.BASELINE_ARM}`, for scale). Against the reference, the per-seed "
        "differences are paired by seed. "
        "Where the cells kept their per-test-item results (`items.npz`), the interval covers "
        "both sources of noise: the paired t interval of the per-seed differences, widened by "
        "the noise every seed shares, that of the test patients (estimated by resampling the "
        "test patients, the same draw for every seed and both arms, stratified on the classes); "
        "otherwise it is the paired t interval over seeds only (scipy.stats.ttest_rel), which "
        "cannot see the test set's noise. Per arm, the interval is built the same way from the "
        "arm's own values. p-values are adjusted "
        + (
            f"within each family ({multiplicity.NAMES[correction]}): the primary family, "
            f"{', '.join(primary)} x every arm, pre-registered in the study config before any "
            "cell ran (study.json), and the secondary, exploratory family of every other arm x "
            "metric comparison"
            if primary
            else f"over every arm x metric comparison ({multiplicity.NAMES[correction]})"
        )
        + "; comparisons that are identically zero by "
        "construction (an arm that computes the same function as the reference) are left out "
        "of that count and named. A nonzero difference that is the same at every seed, with "
        "no test-set noise known, has no spread to judge it by and is not counted as a finding. "
        "docs/studies.md explains the statistics and their simulated coverage.",
        "",
        "Files: `results.csv` (every cell's metrics), `summary.csv` (the tables above, with the "
        "seed-only intervals and adjusted p-values), `summary.md` (the plain words, generated), "
        "`figures/metrics.png`, `figures/differences.png`; per cell "
        "`cells/<arm>/seed_<seed>/config.json` (its resolved config; "
        f"`cells/{cell.BASELINE_ARM}/...` for the baseline), `result.json` (its "
        "metrics, budget, machine) and `items.npz` (its per-test-item results).",
        "",
    ]
    if len(summary):
        plot_figures(frame, summary, arms + baselines, metrics, reference, out / "figures")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
