"""Learning-curve figure: one panel per (task, metric), one line per source (matplotlib, Agg)."""

from __future__ import annotations

import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pclr_jax.evaluation.probe import PRIMARY_METRIC, summarize  # noqa: E402

METRIC_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "r2": "R$^2$", "mae": "MAE"}


def plot_learning_curves(
    results: pd.DataFrame, path: str | pathlib.Path, metrics: tuple[str, ...] | None = None
) -> pathlib.Path:
    """Draws ``learning_curve`` results into a PNG.

    x: training-set size (ECGs, log scale; the mean size over repeats for ``all``); y: the mean
    metric over repeats with a band of +/- one standard deviation across repeats. ``metrics``
    chooses the panels' metrics (default: each task's primary metric, AUROC or R^2).
    """
    path = pathlib.Path(path)
    table = summarize(results)
    table = table[table["metric"].isin(metrics or set(PRIMARY_METRIC.values()))]
    panels = list(table.groupby(["task", "metric"], sort=False))
    if not panels:
        raise ValueError("no results to plot")
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.6 * rows), squeeze=False)
    sources = list(dict.fromkeys(table["source"]))
    colours = dict(zip(sources, plt.get_cmap("tab10").colors, strict=False))
    for ax, ((task, metric), part) in zip(axes.flat, panels, strict=False):
        for source, line in part.groupby("source", sort=False):
            line = line.sort_values("size")
            mean, std = line["mean"].to_numpy(), np.nan_to_num(line["std"].to_numpy())
            ax.plot(line["size"], mean, marker="o", label=source, color=colours[source])
            ax.fill_between(line["size"], mean - std, mean + std, alpha=0.2, color=colours[source])
        ax.set_xscale("log")
        ticks = part.groupby("size_label", sort=False)["size"].mean().sort_values()
        ax.set_xticks(
            ticks.to_numpy(),
            [f"all\n({v:,.0f})" if k == "all" else f"{v:,.0f}" for k, v in ticks.items()],
        )
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(task)
        ax.set_xlabel("training ECGs")
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
