"""Where training metrics go: ``metrics.jsonl``, TensorBoard (tensorboardX) and a PNG of the curves.

Every record is ``{"step": int, "split": "train"|"eval", <name>: float, ...}``, one JSON object per
line. On resume, records after the restored step are dropped first, so the log never holds two
records for one step and split.

A local workdir's ``metrics.jsonl`` is appended to, record by record. A remote workdir (``gs://``),
whose objects cannot be appended to, gets the records in pieces: :meth:`MetricLog.flush` (called at
every checkpoint) uploads the records written since the previous flush as one object
``metrics.jsonl.parts/<n>.jsonl``, and :meth:`MetricLog.close` (the end of the run, or a stop)
writes the whole log once as ``metrics.jsonl`` and deletes the parts. :func:`read_metrics` reads
``metrics.jsonl`` and then the parts, so a running remote log reads complete up to its last
checkpoint. Each record is uploaded at most twice (its part, the final file), plus once per resume:
bytes linear in the records. (The log used to rewrite the whole remote file at every record:
quadratic bytes, and a storage round trip on process 0 per record while the other hosts waited at
the next collective.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import tensorboardX
from etils import epath

from pclr_jax.runtime.storage import is_remote

PARTS_SUFFIX = ".parts"


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class MetricLog:
    """Appends scalar metrics to ``<workdir>/metrics.jsonl`` and to TensorBoard (process 0 only)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.remote = is_remote(self.path)
        self._writer = (
            tensorboardX.SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard"))
            if enabled
            else None
        )
        # Remote workdirs: every record of the log (for the final file), how many of them are
        # uploaded already (in metrics.jsonl or its parts) and the next part's number.
        self._records: list[dict] = []
        self._uploaded = 0
        self._parts = 0

    @property
    def parts_dir(self) -> epath.Path:
        return self.path.parent / (self.path.name + PARTS_SUFFIX)

    def truncate_after(self, step: int) -> None:
        """Drops records with ``step > step`` (the steps a resumed run will redo)."""
        if not self.enabled:
            return
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        if self.path.exists() or kept:
            self.path.write_text(_lines(kept))
        if self.parts_dir.exists():
            self.parts_dir.rmtree()
        if self.remote:
            self._records, self._uploaded, self._parts = kept, len(kept), 0

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: float(v) for k, v in values.items()})
        if self.remote:
            self._records.append(record)
        else:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        for name, value in values.items():
            if math.isfinite(float(value)):
                self._writer.add_scalar(f"{split}/{name}", float(value), step)
        self._writer.flush()

    def flush(self) -> None:
        """Uploads the records written since the last flush (remote workdirs; else a no-op)."""
        if not (self.enabled and self.remote) or self._uploaded == len(self._records):
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        part = self.parts_dir / f"{self._parts:06d}.jsonl"
        part.write_text(_lines(self._records[self._uploaded :]))
        self._uploaded, self._parts = len(self._records), self._parts + 1

    def close(self) -> None:
        """Ends the log: a remote one becomes one ``metrics.jsonl`` (its parts deleted)."""
        if self.enabled and self.remote:
            self.path.write_text(_lines(self._records))
            if self.parts_dir.exists():
                self.parts_dir.rmtree()
            self._uploaded, self._parts = len(self._records), 0
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a ``metrics.jsonl`` file and of its uploaded parts, in order."""
    path = epath.Path(path)
    parts = path.parent / (path.name + PARTS_SUFFIX)
    files = [path] if path.exists() else []
    if parts.exists():
        files += sorted(parts.glob("*.jsonl"), key=lambda p: p.name)
    records = []
    for file in files:
        with file.open() as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


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
