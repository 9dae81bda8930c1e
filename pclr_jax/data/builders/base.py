"""The common tensorflow-datasets builder of prepared ECG data sets.

Every builder writes ``array_record`` shards (random access, readable without TensorFlow) with one
example per ECG:

=================  ======================  ===================================================
feature            type                    meaning
=================  ======================  ===================================================
``ecg``            ``(n_samples, 12)``     float16 mV, leads in ``STANDARD_LEADS`` order
``record_id``      text                    unique within the data set
``patient_id``     text                    the source's patient id (splits never share one)
``ecg_group``      text                    one value per distinct ECG (see duplicates below)
``sampling_rate``  float32                 the source's sampling rate, Hz
``age``            float32                 years, NaN unknown
``sex``            int64                   0 male, 1 female, -1 unknown
``af``, ``lvh``    int64                   1 present, 0 absent, -1 unknown
(data set labels)  see each builder
=================  ======================  ===================================================

A builder describes its input as a *manifest* (:meth:`ECGBuilder._build_manifest`): one row per
source record with ``record_id``, ``patient_id``, ``path`` (for reports), optionally ``ecg_group``
and ``split``, the label columns and whatever its reader needs. From it the base class

1. keeps one copy per ``ecg_group`` (the highest ``sampling_rate`` column value, then the first
   row): copies of one recording (PTB-XL's 100 Hz and 500 Hz files) must never become a positive
   pair nor be retrieved as "another ECG of the patient"; dropped copies are listed in
   ``duplicates.csv``. A group spanning two patients is an error;
2. assigns splits by patient (:mod:`pclr_jax.data.splits`) unless the builder gave them;
3. reads and prepares the records in worker processes (:mod:`pclr_jax.data.ingest`), in a fixed
   order (split, patient, record), and yields them with integer keys: the builder sets
   ``disable_shuffling=True``, so tfds writes examples in key order and example ``i`` of a split is
   the ``i``-th prepared record. Each patient's records are then compared by content
   (:mod:`pclr_jax.data.copies`): copies of one recording that no ``ecg_group`` named keep one
   record by the same rule, the others go to ``duplicates.csv`` (``found_by = 'content'``);
4. quarantines records that fail (unreadable, NaN, missing leads, too short, wrong units...):
   they are not written, and ``quarantine.csv`` lists each with its reason and message;
5. writes, inside tfds's temporary directory (so atomically with the shards),
   ``index-<split>.parquet`` (row ``i`` = example ``i``: every feature but ``ecg``; multi-hot
   labels as one column per class), ``quarantine.csv``, ``duplicates.csv`` and
   ``prepare_report.json`` with the counts: ``input_records = written + quarantined + duplicates``.

With a Beam runner (``DownloadConfig(beam_runner=...)``) steps 3-4 run as an Apache Beam pipeline
with the same per-patient function,
:func:`~pclr_jax.data.builders.settle.settle_patient`, and the index is read back from the
finished shards (:mod:`pclr_jax.data.builders.beam_prepare`).
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from etils import epath

from pclr_jax.data import ingest
from pclr_jax.data.builders.settle import patient_spans, settle_patient
from pclr_jax.data.prepared import INDEX_TEMPLATE, REPORT_FILE
from pclr_jax.data.splits import SPLITS, assign_splits, check_fractions, check_patient_disjoint
from pclr_jax.runtime import progress

N_LEADS = 12
QUARANTINE_FILE = "quarantine.csv"
DUPLICATES_FILE = "duplicates.csv"
QUARANTINE_COLUMNS = ("record_id", "patient_id", "split", "path", "reason", "message")
DUPLICATE_COLUMNS = (
    "record_id",
    "patient_id",
    "path",
    "ecg_group",
    "kept_record_id",
    "found_by",
)
ID_COLUMNS = ("record_id", "patient_id", "ecg_group")
# Records between two progress lines when the output is not a terminal.
PROGRESS_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class Label:
    """A label feature: ``kind`` is ``'float'`` (float32, NaN unknown), ``'int'`` (int64, -1
    unknown), ``'text'`` (str, '' unknown) or ``'multi_hot'`` (int64 ``(len(names),)``, -1 unknown;
    one index column ``<name>_<class>`` per class)."""

    kind: str
    description: str
    names: tuple[str, ...] = ()

    def feature(self) -> tfds.features.FeatureConnector:
        if self.kind == "float":
            return tfds.features.Scalar(np.float32, doc=self.description)
        if self.kind == "int":
            return tfds.features.Scalar(np.int64, doc=self.description)
        if self.kind == "text":
            return tfds.features.Text(doc=self.description)
        if self.kind == "multi_hot":
            return tfds.features.Tensor(
                shape=(len(self.names),), dtype=np.int64, doc=self.description
            )
        raise ValueError(f"unknown label kind {self.kind!r}")

    def default(self) -> Any:
        return {
            "float": math.nan,
            "int": -1,
            "text": "",
            "multi_hot": np.full(len(self.names), -1, np.int64),
        }[self.kind]

    def normalize(self, column: pd.Series) -> pd.Series:
        """The manifest column in this label's type, unknowns replaced by the default."""
        if self.kind == "float":
            return pd.to_numeric(column, errors="coerce").astype(np.float32)
        if self.kind == "int":
            return pd.to_numeric(column, errors="coerce").fillna(-1).astype(np.int64)
        if self.kind == "text":
            return column.fillna("").astype(str)
        values = [
            self.default() if v is None else np.asarray(v, np.int64).reshape(len(self.names))
            for v in column
        ]
        return pd.Series(values, index=column.index, dtype=object)


COMMON_LABELS: Mapping[str, Label] = {
    "age": Label("float", "age in years, NaN unknown"),
    "sex": Label("int", "0 male, 1 female, -1 unknown"),
    "af": Label("int", "atrial fibrillation or flutter: 1 yes, 0 no, -1 unknown"),
    "lvh": Label("int", "left ventricular hypertrophy: 1 yes, 0 no, -1 unknown"),
}


@dataclasses.dataclass(eq=False)
class ECGConfig(tfds.core.BuilderConfig):
    """A prepared ECG data set's model-input format and split rule.

    Attributes:
        n_samples: samples per stored ECG.
        duration_s: seconds of the source resampled to ``n_samples`` (10 s: 409.6 Hz for 4096).
        resample: ``prepare_ecg``'s method: ``'ml4h'`` (linear interpolation) or ``'antialias'``.
        split_fractions: ``((split, fraction), ...)`` for hash-assigned splits (ignored by builders
            with predefined folds, such as PTB-XL's ``strat_fold``).
        split_salt: the salt of the patient hash (a different salt is a different random split).
    """

    n_samples: int = 4096
    duration_s: float | None = 10.0
    resample: str = "ml4h"
    split_fractions: tuple[tuple[str, float], ...] = (
        ("train", 0.8),
        ("validation", 0.1),
        ("test", 0.1),
    )
    split_salt: str = "pclr-jax"

    @property
    def spec(self) -> ingest.PrepareSpec:
        return ingest.PrepareSpec(self.n_samples, self.duration_s, self.resample)


def standard_configs(**overrides: Any) -> list[ECGConfig]:
    """``default``: 4096 samples over 10 s (the PCLR input); ``tiny``: 256 samples over 10 s, for
    smoke tests and CI."""
    return [
        ECGConfig(name="default", description="4096 samples over 10 s (PCLR)", **overrides),
        ECGConfig(name="tiny", description="256 samples over 10 s (tests)", n_samples=256),
    ]


@dataclasses.dataclass
class _Run:
    """What one ``download_and_prepare`` learns while it generates the splits."""

    manifest: pd.DataFrame
    duplicates: pd.DataFrame
    index_rows: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    quarantined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    content_duplicates: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class ECGBuilder(tfds.core.GeneratorBasedBuilder):
    """Base class of the ECG data-set builders (see the module docstring).

    Subclasses set ``name``, ``BUILDER_CONFIGS``, ``DESCRIPTION``, optionally ``LABELS`` (data
    set-specific label features), ``HOMEPAGE``, ``CITATION``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``, and
    implement :meth:`_build_manifest` and :meth:`_iter_outcomes` (file-based builders get the
    latter from :class:`~pclr_jax.data.builders.files.FileECGBuilder`).

    Args:
        workers: processes that read and resample records (default: CPUs minus one; 0 reads in
            this process).
        **kwargs: ``tfds.core.GeneratorBasedBuilder`` arguments (``data_dir``, ``config``...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    DESCRIPTION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str | None] = None
    CITATION: ClassVar[str | None] = None
    LABELS: ClassVar[Mapping[str, Label]] = {}

    def __init__(self, *, workers: int | None = None, **kwargs: Any):
        self._workers = ingest.default_workers() if workers is None else int(workers)
        self._run: _Run | None = None
        super().__init__(file_format="array_record", **kwargs)

    @classmethod
    def labels(cls) -> dict[str, Label]:
        """All label features: the common ones and the data set's own."""
        return {**COMMON_LABELS, **cls.LABELS}

    def _info(self) -> tfds.core.DatasetInfo:
        config: ECGConfig = self.builder_config
        features = {
            # Raw bytes: tfds otherwise serialises float16 as a float32 list (2x the bytes, and
            # ~140x slower to serialise; see benchmarks/ingest.py and docs/data.md).
            "ecg": tfds.features.Tensor(
                shape=(config.n_samples, N_LEADS),
                dtype=np.float16,
                encoding=tfds.features.Encoding.BYTES,
                doc="(samples, leads) mV, leads I II III aVR aVL aVF V1-V6",
            ),
            "record_id": tfds.features.Text(doc="record id, unique in the data set"),
            "patient_id": tfds.features.Text(doc="patient id"),
            "ecg_group": tfds.features.Text(doc="one value per distinct recording"),
            "sampling_rate": tfds.features.Scalar(np.float32, doc="source sampling rate, Hz"),
        }
        features.update({name: label.feature() for name, label in self.labels().items()})
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    # Subclass hooks.

    @abc.abstractmethod
    def _build_manifest(self, dl_manager: tfds.download.DownloadManager) -> pd.DataFrame:
        """One row per input record: ``record_id``, ``patient_id``, ``path``, optional
        ``ecg_group``, ``split``, ``sampling_rate`` and label columns, plus the reader's columns."""

    @abc.abstractmethod
    def _iter_outcomes(self, tasks: list[dict[str, Any]]) -> Iterator[ingest.Outcome]:
        """One :class:`~pclr_jax.data.ingest.Outcome` per manifest row (task), in order."""

    # Generation.

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manifest, duplicates = self._plan(self._build_manifest(dl_manager))
        self._run = _Run(manifest, duplicates)
        present = [s for s in SPLITS if (manifest["split"] == s).any()]
        present += sorted(set(manifest["split"]) - set(SPLITS))
        if getattr(self, "_on_beam", False):
            from pclr_jax.data.builders import beam_prepare

            return {split: beam_prepare.PrepareSplit(self, split) for split in present}
        return {split: self._generate_examples(split) for split in present}

    def _plan(self, manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validates the manifest, drops duplicate copies, assigns splits and fixes the order."""
        manifest = normalize_manifest(manifest, self.labels())
        manifest, duplicates = drop_duplicate_copies(manifest)
        if "split" not in manifest:
            fractions = dict(self.builder_config.split_fractions)
            check_fractions(fractions)
            manifest["split"] = assign_splits(
                manifest["patient_id"], fractions, self.builder_config.split_salt
            )
        check_patient_disjoint(manifest["patient_id"], manifest["split"])
        manifest = manifest.sort_values(["split", "patient_id", "record_id"], kind="stable")
        return manifest.reset_index(drop=True), duplicates

    def _split_tasks(self, split: str) -> list[dict[str, Any]]:
        manifest = self._run.manifest
        return manifest[manifest["split"] == split].to_dict("records")

    def _feature_names(self) -> tuple[str, ...]:
        return (*ID_COLUMNS, *self.labels())

    def _generate_examples(self, split: str):
        run = self._run
        tasks = self._split_tasks(split)
        rows = run.index_rows.setdefault(split, [])
        outcomes = iter(
            progress.track(
                self._iter_outcomes(tasks),
                f"{self.name} {split}",
                total=len(tasks),
                unit="ECG",
                every=PROGRESS_EVERY,
            )
        )
        for start, stop in patient_spans(tasks):
            settled = settle_patient(
                tasks[start:stop],
                list(itertools.islice(outcomes, stop - start)),
                start,
                split,
                self._feature_names(),
            )
            run.quarantined.extend(entry for _, entry in settled.quarantined)
            run.content_duplicates.extend(entry for _, entry in settled.duplicates)
            for _, example in settled.examples:
                rows.append({k: v for k, v in example.items() if k != "ecg"})
                yield len(rows) - 1, example
        if next(outcomes, None) is not None:
            raise RuntimeError(f"{split}: more outcomes than the {len(tasks)} tasks")

    def _download_and_prepare(self, dl_manager, download_config):
        self._on_beam = (
            download_config.beam_runner is not None or download_config.beam_options is not None
        )
        try:
            super()._download_and_prepare(dl_manager, download_config)
        except (AssertionError, ValueError) as error:
            if self._on_beam:
                # Quarantine rows live in the pipeline's scratch files; a split left empty fails
                # in tfds's Beam writer ("... generated examples is 0 ...").
                if "generated examples is 0" not in str(error):
                    raise
                raise ValueError(
                    f"{self.name}: a split has no records left after quarantine and copies; "
                    "see the worker logs"
                ) from error
            if "No examples were yielded" not in str(error) or not self._run.quarantined:
                raise
            reasons = pd.Series([q["reason"] for q in self._run.quarantined]).value_counts()
            raise ValueError(
                f"{self.name}: a split has no records left after quarantine "
                f"({reasons.to_dict()}); e.g. {self._run.quarantined[0]['message']}"
            ) from error
        directory = epath.Path(self.data_dir)
        if self._on_beam:
            from pclr_jax.data.builders import beam_prepare

            beam_prepare.collect(self, directory)
        self._write_side_files(directory)

    def _write_side_files(self, directory: epath.Path) -> None:
        """Index per split, quarantine and duplicates lists and the count report."""
        run = self._run
        for split, rows in run.index_rows.items():
            index = index_frame(rows, self.labels())
            with (directory / INDEX_TEMPLATE.format(split=split)).open("wb") as f:
                index.to_parquet(f, index=False)
        quarantine = pd.DataFrame(run.quarantined, columns=list(QUARANTINE_COLUMNS))
        with (directory / QUARANTINE_FILE).open("w") as f:
            quarantine.to_csv(f, index=False)
        content = pd.DataFrame(run.content_duplicates, columns=list(DUPLICATE_COLUMNS))
        duplicates = (
            pd.concat([run.duplicates, content], ignore_index=True)
            if len(content)
            else run.duplicates
        )
        with (directory / DUPLICATES_FILE).open("w") as f:
            duplicates.to_csv(f, index=False)
        written = {split: len(rows) for split, rows in run.index_rows.items()}
        report = {
            "name": self.name,
            "config": self.builder_config.name,
            "version": str(self.version),
            "n_samples": self.builder_config.n_samples,
            "duration_s": self.builder_config.duration_s,
            "input_records": len(run.manifest) + len(run.duplicates),
            "written": written,
            "written_total": sum(written.values()),
            "quarantined": len(quarantine),
            "quarantined_by_reason": quarantine["reason"].value_counts().sort_index().to_dict(),
            "duplicates": len(duplicates),
            "duplicates_by_content": len(content),
            "patients": {
                split: int(pd.Series([r["patient_id"] for r in rows]).nunique())
                for split, rows in run.index_rows.items()
            },
        }
        accounted = report["written_total"] + report["quarantined"] + report["duplicates"]
        if accounted != report["input_records"]:
            raise RuntimeError(f"{accounted} records accounted for, {report['input_records']} in")
        with (directory / REPORT_FILE).open("w") as f:
            json.dump(report, f, indent=2)


def normalize_manifest(manifest: pd.DataFrame, labels: Mapping[str, Label]) -> pd.DataFrame:
    """Checks ids and brings label columns to their types (missing ones become unknown).

    Raises:
        ValueError: no records, a missing ``record_id``/``patient_id`` column, an empty patient id
            or a repeated record id (naming examples).
    """
    if len(manifest) == 0:
        raise ValueError("the manifest lists no records")
    for column in ("record_id", "patient_id"):
        if column not in manifest:
            raise ValueError(f"the manifest has no {column!r} column")
    manifest = manifest.copy()
    missing = manifest["patient_id"].isna() | (manifest["patient_id"].astype(str).str.strip() == "")
    if missing.any():
        examples = manifest.loc[missing, "record_id"].head(5).tolist()
        raise ValueError(f"{int(missing.sum())} records have no patient id, e.g. {examples}")
    manifest["record_id"] = manifest["record_id"].astype(str)
    manifest["patient_id"] = manifest["patient_id"].astype(str)
    repeated = manifest["record_id"].duplicated(keep=False)
    if repeated.any():
        examples = sorted(set(manifest.loc[repeated, "record_id"]))[:5]
        raise ValueError(f"record ids must be unique; repeated: {examples}")
    if "ecg_group" not in manifest:
        manifest["ecg_group"] = manifest["record_id"]
    blank = manifest["ecg_group"].isna() | (manifest["ecg_group"].astype(str) == "")
    manifest["ecg_group"] = manifest["ecg_group"].astype(str).where(~blank, manifest["record_id"])
    if "path" not in manifest:
        manifest["path"] = ""
    manifest["path"] = manifest["path"].fillna("").astype(str)
    for name, label in labels.items():
        column = manifest[name] if name in manifest else pd.Series([None] * len(manifest))
        manifest[name] = label.normalize(column.set_axis(manifest.index))
    return manifest


def drop_duplicate_copies(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keeps one record per ``ecg_group``: the highest ``sampling_rate`` (if the manifest has that
    column), then the first in manifest order.

    Returns:
        ``(kept, dropped)``; ``dropped`` has :data:`DUPLICATE_COLUMNS`.

    Raises:
        ValueError: an ``ecg_group`` whose records belong to different patients.
    """
    patients = manifest.groupby("ecg_group")["patient_id"].nunique()
    conflicting = patients[patients > 1]
    if len(conflicting):
        group = conflicting.index[0]
        found = sorted(manifest.loc[manifest["ecg_group"] == group, "patient_id"].unique())
        raise ValueError(
            f"{len(conflicting)} ecg_groups span several patients, e.g. {group!r}: {found}"
        )
    order = manifest.assign(_position=np.arange(len(manifest)))
    if "sampling_rate" in order:
        rate = pd.to_numeric(order["sampling_rate"], errors="coerce").fillna(-np.inf)
        order = order.assign(_rate=-rate).sort_values(["_rate", "_position"], kind="stable")
    keep_positions = order.drop_duplicates("ecg_group")["_position"].to_numpy()
    mask = np.zeros(len(manifest), bool)
    mask[keep_positions] = True
    kept, dropped = manifest[mask], manifest[~mask]
    kept_by_group = dict(zip(kept["ecg_group"], kept["record_id"], strict=True))
    dropped = pd.DataFrame(
        {
            "record_id": dropped["record_id"],
            "patient_id": dropped["patient_id"],
            "path": dropped["path"],
            "ecg_group": dropped["ecg_group"],
            "kept_record_id": dropped["ecg_group"].map(kept_by_group),
            "found_by": "ecg_group",
        },
        columns=list(DUPLICATE_COLUMNS),
    )
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def index_frame(rows: list[dict[str, Any]], labels: Mapping[str, Label]) -> pd.DataFrame:
    """The index DataFrame of a split from its example rows (all features but ``ecg``).

    Multi-hot labels become one int64 column ``<label>_<class>`` per class.
    """
    columns = [*ID_COLUMNS, "sampling_rate", *labels]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ID_COLUMNS:
        frame[column] = frame[column].astype(str)
    frame["sampling_rate"] = frame["sampling_rate"].astype(np.float32)
    for name, label in labels.items():
        if label.kind == "multi_hot":
            values = np.stack(frame[name].to_numpy()) if len(frame) else np.zeros((0, 0))
            for k, class_name in enumerate(label.names):
                frame[f"{name}_{class_name}"] = (
                    values[:, k].astype(np.int64) if len(frame) else np.zeros(0, np.int64)
                )
            frame = frame.drop(columns=name)
        elif label.kind == "float":
            frame[name] = frame[name].astype(np.float32)
        elif label.kind == "int":
            frame[name] = frame[name].astype(np.int64)
        else:
            frame[name] = frame[name].astype(str)
    return frame
