"""Opening a prepared split: the tfds ``array_record`` data source plus its index table.

Reads only files (``dataset_info.json``, the shards and ``index-<split>.parquet``): neither the
builder code nor TensorFlow is needed, so a data set prepared on one machine can be read anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pandas as pd
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import read_only_builder

INDEX_TEMPLATE = "index-{split}.parquet"
REPORT_FILE = "prepare_report.json"


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """One split of a prepared data set.

    Attributes:
        source: random access, ``len(source)`` and ``source[i]`` -> dict with ``'ecg'``
            ``(n_samples, 12)`` float16 mV, ``'record_id'``, ``'patient_id'``, ``'ecg_group'``
            (text features come back as ``bytes``, as tfds decodes them without TensorFlow),
            ``'sampling_rate'`` (Hz), the labels (``'age'`` years NaN unknown, ``'sex'`` 0 M / 1 F
            / -1, ``'af'``, ``'lvh'`` 1/0/-1, plus the data set's own).
        index: one row per example, row ``i`` describes ``source[i]``: ``record_id``,
            ``patient_id``, ``ecg_group`` (str), ``sampling_rate`` and every label column
            (multi-hot labels as ``<label>_<class>`` columns).
        name, split, directory: where it came from (``directory`` is
            ``<data_dir>/<name>/<config>/<version>``).
        report: the counts written at prepare time (``prepare_report.json``).
    """

    source: Any
    index: pd.DataFrame
    name: str
    split: str
    directory: str
    report: dict

    @property
    def n_samples(self) -> int:
        """Samples per ECG."""
        return int(self.report["n_samples"])

    def __len__(self) -> int:
        return len(self.index)


def prepared_directory(
    name: str, data_dir: str | os.PathLike, config: str | None = None, version: str | None = None
) -> epath.Path:
    """``<data_dir>/<name>/<config>/<version>`` of a prepared data set (default config and the
    newest version when not given), found from files alone.

    Raises:
        FileNotFoundError: nothing prepared there, naming what was looked for.
    """
    spec = f"{name}/{config}" if config else name
    if version:
        spec = f"{spec}:{version}"
    try:
        builder = read_only_builder.builder_from_files(spec, data_dir=os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError as error:
        root = epath.Path(data_dir) / name
        found = (
            sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
            if (root.is_dir())
            else []
        )
        raise FileNotFoundError(
            f"no prepared data set {spec!r} in {os.fspath(data_dir)!r} (configs there: {found}); "
            f"run `pclr prepare {name}{' --config ' + config if config else ''} --data-dir "
            f"{os.fspath(data_dir)}`"
        ) from error
    return epath.Path(builder.data_dir)


def load_prepared(
    name: str,
    split: str,
    data_dir: str | os.PathLike,
    config: str | None = None,
    version: str | None = None,
) -> PreparedSplit:
    """Opens ``split`` (``'train'``, ``'validation'`` or ``'test'``) of a prepared data set.

    Args:
        name: the data set, e.g. ``'pclr_synthetic'``, ``'ptbxl'``, ``'pclr_ecg_folder'``.
        split: the split name.
        data_dir: the ``--data-dir`` it was prepared into.
        config: builder config (``None``: the data set's default, e.g. ``'default'``).
        version: data set version (``None``: the newest prepared).

    Raises:
        FileNotFoundError: the data set or its index is missing.
        KeyError: no such split.
        ValueError: the index does not match the source (length, first or last record).
    """
    directory = prepared_directory(name, data_dir, config, version)
    builder = tfds.builder_from_directory(directory)
    if split not in builder.info.splits:
        raise KeyError(f"{name}: no split {split!r}; prepared: {sorted(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    index_path = directory / INDEX_TEMPLATE.format(split=split)
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} is missing; prepare the data set again")
    with index_path.open("rb") as f:
        index = pd.read_parquet(f)
    check_index(source, index, f"{name}/{split}")
    report_path = directory / REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return PreparedSplit(source, index, name, split, os.fspath(directory), report)


def check_index(source: Any, index: pd.DataFrame, label: str) -> None:
    """Cheap consistency check: equal lengths and matching first and last record ids."""
    if len(index) != len(source):
        raise ValueError(f"{label}: index has {len(index)} rows, the source {len(source)}")
    for row in {0, len(index) - 1} if len(index) else ():
        found = source[row]["record_id"]
        found = found.decode() if isinstance(found, bytes) else str(found)
        if found != index["record_id"].iloc[row]:
            raise ValueError(
                f"{label}: source[{row}] is {found!r} but index row {row} is "
                f"{index['record_id'].iloc[row]!r}"
            )
