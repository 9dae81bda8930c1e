"""Tables and figures of a reproduction run (``scripts/reproduce.sh``).

Reads the ``pclr probe`` outputs under OUT (``linear/``, ``all/``, ``statements/``,
``scratch/``: each a ``results.csv``; ``linear/retrieval.csv``; ``timings.tsv``), merges them
(the same source, task, size and repeat fitted twice, such as the PCLR probes of the scratch run,
count once: they are the same fit on the same rows) and writes:

* ``OUT/report.md``: per task, the primary metric (AUROC; R^2 for age) as mean ± SD over repeats
  by training-set size and source; PCLR minus each baseline; the relative gain of PCLR over the
  network trained from scratch (the paper's comparison); retrieval; every fold-1-8-label probe
  beside the PTB-XL benchmark; the time of each step;
* ``FIGURES/repro_<name>_curves.png``: the learning curves (``pclr_jax.evaluation.plots``).

    python scripts/repro_report.py runs/repro_synthetic --name synthetic --figures docs/figures
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import pandas as pd

from pclr_jax.evaluation.plots import plot_learning_curves
from pclr_jax.evaluation.probe import summarize

RUNS = ("linear", "all", "statements", "scratch")
KEY = ["source", "task", "size_label", "repeat", "metric"]
SOURCE_ORDER = ("pclr", "random_init", "scratch")
# Published supervised results on PTB-XL "all statements" (71 SCP statements, macro AUROC on
# fold 10, 100 Hz; Strodthoff et al. 2021, IEEE JBHI, and the helme/ecg_ptbxl_benchmarking
# leaderboard).
BENCHMARK_ALL_STATEMENTS = {"xresnet1d101": 0.925, "inception1d": 0.925}
CURVE_EXCLUDED_TASKS = ("all_statements",)


def load_results(out: pathlib.Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(out / run / "results.csv").assign(run=run)
        for run in RUNS
        if (out / run / "results.csv").exists()
    ]
    if not frames:
        raise FileNotFoundError(f"no {'/'.join(RUNS)}/results.csv under {out}")
    results = pd.concat(frames, ignore_index=True)
    results["size_label"] = results["size_label"].astype(str)
    return results.drop_duplicates(KEY, keep="first").drop(columns="run")


def primary_metric(results: pd.DataFrame, task: str) -> str:
    return "r2" if "r2" in set(results.loc[results["task"] == task, "metric"]) else "auroc"


def _sources(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["source"]))
    return [s for s in SOURCE_ORDER if s in present] + [s for s in present if s not in SOURCE_ORDER]


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _size_name(label: str, size: float) -> str:
    return f"all ({size:,.0f})" if label == "all" else f"{size:,.0f}"


def curve_tables(results: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Markdown tables (mean ± SD (repeats)) and the long table of means."""
    blocks, means = [], []
    for task in dict.fromkeys(results["task"]):
        metric = primary_metric(results, task)
        part = summarize(results[(results["task"] == task) & (results["metric"] == metric)])
        means.append(part.assign(metric=metric))
        rows = []
        for label, by_size in part.groupby("size_label", sort=False):
            row = {"training ECGs": _size_name(label, by_size["size"].mean())}
            cells = by_size.set_index("source")
            for source in _sources(part):
                if source not in cells.index:
                    row[source] = ""
                    continue
                cell = cells.loc[source]
                sd = "" if np.isnan(cell["std"]) else f" ± {cell['std']:.3f}"
                row[source] = f"{cell['mean']:.3f}{sd} ({int(cell['repeats'])})"
            rows.append(row)
        blocks.append(f"**{task}** ({metric.upper()})\n\n{_markdown(pd.DataFrame(rows))}")
    return "\n\n".join(blocks), pd.concat(means, ignore_index=True)


def gains(means: pd.DataFrame) -> tuple[str, str]:
    """PCLR against the network trained from scratch at the sizes both have (means over the
    repeats): the difference and the relative gain, and a one-line average of the latter."""
    wide = means.pivot_table(
        index=["task", "metric", "size_label"], columns="source", values="mean"
    )
    if "scratch" not in wide or "pclr" not in wide:
        return "", "No scratch results."
    wide = wide.dropna(subset=["pclr", "scratch"])
    sizes = means.groupby(["task", "size_label"])["size"].mean()
    rows = []
    for (task, metric, label), row in wide.iterrows():
        pclr, scratch = row["pclr"], row["scratch"]
        # The relative gain of the metric itself; for R^2 only where scratch explains some
        # variance (a ratio to an R^2 at or below zero means nothing).
        gain = (pclr - scratch) / abs(scratch) if metric == "auroc" or scratch > 0 else np.nan
        rows.append(
            {
                "task": task,
                "metric": metric.upper(),
                "_size": sizes[(task, label)],
                "training ECGs": _size_name(label, sizes[(task, label)]),
                "PCLR": f"{pclr:.3f}",
                "scratch": f"{scratch:.3f}",
                "random init": f"{row.get('random_init', np.nan):.3f}",
                "PCLR - scratch": f"{pclr - scratch:+.3f}",
                "relative gain": "n/a (scratch R^2 <= 0)" if np.isnan(gain) else f"{gain:+.1%}",
                "_gain": gain,
            }
        )
    table = pd.DataFrame(rows).sort_values(["task", "_size"])
    defined = table.dropna(subset=["_gain"])
    summary = (
        f"Mean relative gain of PCLR over scratch: {defined['_gain'].mean():+.1%} over "
        f"{len(defined)} (task, size) cells ({defined['task'].nunique()} tasks, sizes "
        f"{', '.join(f'{v:,.0f}' for v in sorted(defined['_size'].unique()))}); PCLR ahead in "
        f"{int((table['PCLR - scratch'].str[0] == '+').sum())} of {len(table)} cells."
    )
    return _markdown(table.drop(columns=["_size", "_gain"])), summary


def all_labels_table(results: pd.DataFrame) -> str:
    part = results[(results["size_label"] == "all")]
    rows = []
    for (task, source), by in part.groupby(["task", "source"], sort=False):
        metric = primary_metric(results, task)
        cell = by[by["metric"] == metric]
        if cell.empty:
            continue
        first = cell.iloc[0]
        rows.append(
            {
                "task": task,
                "source": source,
                "metric": metric.upper(),
                "value [95% CI]": f"{first['value']:.3f} [{first['ci_low']:.3f}, "
                f"{first['ci_high']:.3f}]",
                "training ECGs": f"{int(first['n_train']):,}",
                "test ECGs": f"{int(first['n_test']):,}",
            }
        )
    return _markdown(pd.DataFrame(rows)) + statements_table(part)


def statements_table(part: pd.DataFrame) -> str:
    """PTB-XL all statements: PCLR's linear probe, the randomly initialised encoder's (same probe,
    same folds) and the published supervised models, macro AUROC with the probes' intervals;
    '' when the run has no PCLR statements probe."""
    statements = part[(part["task"] == "all_statements") & (part["metric"] == "auroc")]
    by_source = {row.source: row for row in statements.itertuples()}
    if "pclr" not in by_source:
        return ""
    ours = by_source["pclr"].value
    lines = []
    for source, name in (("pclr", "PCLR (this run)"), ("random_init", "random init (this run)")):
        if source in by_source:
            row = by_source[source]
            difference = "" if source == "pclr" else f"{ours - row.value:+.3f}"
            lines.append(
                f"| {name} + linear probe | {row.value:.3f} [{row.ci_low:.3f}, "
                f"{row.ci_high:.3f}] | {difference} |"
            )
        else:
            lines.append(f"| {name} + linear probe | not run | |")
    lines += [
        f"| {name} (supervised, published) | {value:.3f} | {ours - value:+.3f} |"
        for name, value in BENCHMARK_ALL_STATEMENTS.items()
    ]
    return (
        "\n\nPTB-XL all statements (71), macro AUROC on fold 10 [95% interval over test "
        "patients]:\n\n| model | macro AUROC | PCLR linear probe minus it |\n| --- | --- | --- |\n"
        + "\n".join(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--name", required=True, help="names the figure: repro_<name>_curves.png")
    parser.add_argument("--figures", type=pathlib.Path, default=pathlib.Path("docs/figures"))
    args = parser.parse_args()

    results = load_results(args.out)
    curves = results[~results["task"].isin(CURVE_EXCLUDED_TASKS)]
    figure = plot_learning_curves(curves, args.figures / f"repro_{args.name}_curves.png")
    tables, means = curve_tables(curves)
    gain_table, gain_summary = gains(means)
    sections = [
        f"# Reproduction: {args.name}",
        "## Learning curves (mean ± SD over repeats, (repeats))",
        tables,
        "## PCLR against the network trained from scratch (means over repeats)",
        gain_table,
        gain_summary,
    ]
    if (results["size_label"] == "all").any():
        sections += ["## Every training label (size all)", all_labels_table(results)]
    retrieval = args.out / "linear" / "retrieval.csv"
    if retrieval.exists():
        table = pd.read_csv(retrieval)
        columns = ["source", "retrieval_top1", "chance_top1", "retrieval_top5", "chance_top5"]
        sections += ["## Patient retrieval (test split)", _markdown(table[columns].round(4))]
    timings = args.out / "timings.tsv"
    if timings.exists():
        table = pd.read_csv(timings, sep="\t", names=["step", "seconds", "command"])
        sections += ["## Time per step (s)", _markdown(table[["step", "seconds"]])]
    sections.append(f"Figure: `{figure}`")
    report = args.out / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    print(report.read_text())


if __name__ == "__main__":
    main()
