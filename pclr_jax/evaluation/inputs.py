"""Reading what ``pclr probe`` evaluates: embedding tables, label tables and prepared splits.

Embedding files are the ``pclr embed`` output: CSV, TSV or Parquet with a ``sample_id`` column and
``latent_0 .. latent_{D-1}`` (ml4h's names); other columns (e.g. ``patient_id``) are kept as labels.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import pandas as pd

ID_COLUMN = "sample_id"
LATENT = re.compile(r"latent_(\d+)$")


def read_table(path: str | pathlib.Path) -> pd.DataFrame:
    """A ``.csv``, ``.tsv``/``.txt`` (tab-separated) or ``.parquet`` file as a DataFrame."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".tsv", ".txt"):
        return pd.read_csv(path, sep="\t")
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: unknown table format {suffix!r} (expected .csv, .tsv or .parquet)")


@dataclasses.dataclass
class EmbeddingTable:
    """``sample_ids`` (N,) str, ``features`` (N, D) float32, ``extra``: the other columns."""

    sample_ids: np.ndarray
    features: np.ndarray
    extra: pd.DataFrame


def read_embeddings(path: str | pathlib.Path) -> EmbeddingTable:
    """Reads a ``pclr embed`` file; errors name the file and the offending sample or column."""
    frame = read_table(path)
    if ID_COLUMN not in frame:
        raise ValueError(f"{path}: no {ID_COLUMN!r} column")
    latent = {int(m.group(1)): c for c in frame.columns if (m := LATENT.match(str(c)))}
    if not latent or sorted(latent) != list(range(len(latent))):
        raise ValueError(
            f"{path}: expected columns latent_0 .. latent_{{D-1}}, found {sorted(latent)[:5]}..."
        )
    ids = frame[ID_COLUMN].astype(str).to_numpy()
    duplicated = pd.Series(ids).duplicated()
    if duplicated.any():
        raise ValueError(f"{path}: sample_id {ids[duplicated.to_numpy()][0]!r} appears twice")
    features = frame[[latent[i] for i in range(len(latent))]].to_numpy(np.float32)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{path}: {bad.sum()} rows have non-finite embeddings, e.g. sample {ids[bad][0]!r}"
        )
    extra = frame.drop(columns=[ID_COLUMN, *latent.values()])
    extra.insert(0, ID_COLUMN, ids)
    return EmbeddingTable(ids, features, extra.reset_index(drop=True))


class JoinError(ValueError):
    """No labelled ECG has an embedding: the ``sample_id`` values of the two sides differ."""


@dataclasses.dataclass(frozen=True)
class JoinCount:
    """How one embedding source met the label rows on ``sample_id``."""

    name: str
    n_embeddings: int
    n_embeddings_labelled: int  # embeddings that found a label row
    n_labels: int
    n_labels_embedded: int  # label rows that found an embedding
    unmatched_embeddings: tuple[str, ...]  # a few ids of each side without a partner
    unmatched_labels: tuple[str, ...]
    name_matches: int  # pairs that would match on the last path component alone

    @property
    def small(self) -> bool:
        """Fewer than half of each side found a partner."""
        return (
            2 * self.n_embeddings_labelled < self.n_embeddings
            and 2 * self.n_labels_embedded < self.n_labels
        )

    def describe(self) -> list[str]:
        lines = [
            f"{self.name!r}: {self.n_embeddings_labelled:,} of {self.n_embeddings:,} embeddings "
            f"found a label row; {self.n_labels_embedded:,} of {self.n_labels:,} label rows found "
            "an embedding"
        ]
        if self.n_labels_embedded == 0 or self.small:
            lines.append(f"  embeddings without labels, e.g. {list(self.unmatched_embeddings)}")
            lines.append(f"  labels without an embedding, e.g. {list(self.unmatched_labels)}")
            if self.name_matches > self.n_labels_embedded:
                lines.append(
                    f"  {self.name_matches:,} would match on the record name alone (the part "
                    "after the last '/'): embed with `pclr embed --sample-id name`, or write the "
                    "label file's ids as paths relative to the folder given to --input"
                )
        return lines


N_EXAMPLES = 5


def _record_name(ids: pd.Series) -> pd.Series:
    return ids.str.rsplit("/", n=1).str[-1]


def count_join(name: str, label_ids: pd.Series, embedding_ids: np.ndarray) -> JoinCount:
    """How the ``embedding_ids`` of source ``name`` meet the label table's ``label_ids``."""
    label_ids = label_ids.astype(str)
    embedding_ids = pd.Series(embedding_ids, dtype=str)
    labelled = embedding_ids.isin(label_ids)
    embedded = label_ids.isin(embedding_ids)
    return JoinCount(
        name=name,
        n_embeddings=len(embedding_ids),
        n_embeddings_labelled=int(labelled.sum()),
        n_labels=len(label_ids),
        n_labels_embedded=int(embedded.sum()),
        unmatched_embeddings=tuple(embedding_ids[~labelled].head(N_EXAMPLES)),
        unmatched_labels=tuple(label_ids[~embedded].head(N_EXAMPLES)),
        name_matches=int(_record_name(label_ids).isin(_record_name(embedding_ids)).sum()),
    )


def align(
    table: pd.DataFrame, sources: dict[str, EmbeddingTable]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[str]]:
    """Keeps the rows of ``table`` (with ``sample_id``) present in every source, in table order.

    Returns the kept table, each source's features in that order, and the report of the join
    (:class:`JoinCount` lines per source: how many embeddings found a label row and how many
    label rows an embedding; examples of unmatched ids from both sides when the overlap is empty
    or small). Raises :class:`JoinError`, with that report, when no row is left.
    """
    ids = table[ID_COLUMN].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"label table: sample_id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    keep = np.ones(len(table), bool)
    report = []
    for name, source in sources.items():
        report.extend(count_join(name, ids, source.sample_ids).describe())
        keep &= ids.isin(source.sample_ids).to_numpy()
    if not keep.any():
        raise JoinError(
            "no labelled ECG has an embedding: joined on sample_id,\n"
            + "\n".join(report)
            + "\npclr embed names a record found in an --input folder by its path relative to "
            "that folder, without extension, and a file given by itself by its name (see "
            "--sample-id); the label file needs a sample_id column with the same ids"
        )
    kept = table[keep].reset_index(drop=True)
    kept_ids = kept[ID_COLUMN].astype(str)
    features = {}
    for name, source in sources.items():
        position = pd.Series(np.arange(len(source.sample_ids)), index=source.sample_ids)
        features[name] = source.features[position.loc[kept_ids].to_numpy()]
    return kept, features, report


def load_split(
    name: str, split: str, data_dir: str, config: str | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """ECGs ``(N, n_samples, 12)`` float16 mV and the index of a prepared split
    (``pclr_jax.data.prepared.load_prepared``), with the index's ``record_id`` also as
    ``sample_id``."""
    from pclr_jax.data.prepared import load_prepared

    prepared = load_prepared(name, split, data_dir, config)
    index = prepared.index.reset_index(drop=True).copy()
    ecgs = np.stack([np.asarray(prepared.source[i]["ecg"], np.float16) for i in range(len(index))])
    index.insert(0, ID_COLUMN, index["record_id"].astype(str))
    return ecgs, index


def task_labels(table: pd.DataFrame, spec: str):
    """``(task, rows, y, classes)`` of one task spec (``"column[:kind]"``): the rows of ``table``
    with a known label and their encoded labels. A multi-label task may name a group of 0/1
    columns ``<COLUMN>_<class>`` (the prepared data sets' multi-hot labels; a row with a -1 is
    unknown)."""
    from pclr_jax.evaluation import probe

    task = probe.TaskSpec.parse(spec)
    if task.column in table:
        values = table[task.column]
        task = task.resolve(values[probe.known_labels(values, task.kind or "multiclass")])
        rows = np.flatnonzero(probe.known_labels(values, task.kind))
        y, classes = probe.encode_labels(values.to_numpy()[rows], task.kind)
        return task, rows, y, classes
    prefix = f"{task.column}_"
    group = [c for c in table.columns if str(c).startswith(prefix)]
    if not group or task.kind not in ("", "multilabel"):
        raise ValueError(f"task {spec}: no column {task.column!r} in {list(table.columns)}")
    matrix = table[group].to_numpy(np.float64)
    rows = np.flatnonzero(np.isfinite(matrix).all(axis=1) & (matrix >= 0).all(axis=1))
    classes = np.array([c[len(prefix) :] for c in group])
    return probe.TaskSpec(task.column, "multilabel"), rows, matrix[rows].astype(np.int64), classes
