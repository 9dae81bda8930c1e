"""Where training metrics go: ``metrics.jsonl``, TensorBoard (tensorboardX) and a PNG of the curves.

Every record is ``{"step": int, "split": "train"|"eval", <name>: float, ...}``, one JSON object per
line. On resume, records after the restored step are dropped first, so the file never holds two
records for one step and split. The workdir may be remote (``gs://``): there, where files cannot
be appended to, the whole file is rewritten at each record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import tensorboardX
from etils import epath

from pclr_jax.runtime.storage import is_remote


class MetricLog:
    """Appends scalar metrics to ``<workdir>/metrics.jsonl`` and to TensorBoard (process 0 only)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._writer = (
            tensorboardX.SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard"))
            if enabled
            else None
        )
        self._records: list[dict] | None = None  # the whole file, kept only for remote workdirs

    def truncate_after(self, step: int) -> None:
        """Drops records with ``step > step`` (the steps a resumed run will redo)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        if is_remote(self.path):
            self._records = kept

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: float(v) for k, v in values.items()})
        if is_remote(self.path):
            self._records = (self._records or []) + [record]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self._records))
        else:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        for name, value in values.items():
            if math.isfinite(float(value)):
                self._writer.add_scalar(f"{split}/{name}", float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a ``metrics.jsonl`` file, in file order."""
    with epath.Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(path: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Draws loss, contrastive accuracy, learning rate and retrieval against step into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    panels = [
        ("train", "loss", "training loss"),
        ("train", "contrastive_accuracy", "contrastive accuracy (train batch)"),
        ("train", "learning_rate", "learning rate"),
        ("eval", "retrieval_top1", "patient retrieval top-1 (validation)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (split, name, title) in zip(axes, panels, strict=True):
        points = [(r["step"], r[name]) for r in records if r["split"] == split and name in r]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if split == "eval" else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
