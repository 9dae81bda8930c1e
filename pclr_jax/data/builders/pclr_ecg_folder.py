"""``pclr_ecg_folder``: any folder of ECG files plus a CSV that maps each record to its patient.

``manual_dir`` holds the files and ``records.csv`` with one row per ECG:

=================  ========  =================================================================
column             required  meaning
=================  ========  =================================================================
``record``         yes       path relative to ``manual_dir``: a WFDB record (with or without
                             ``.hea``), a ``.npy`` file or an ``.h5``/``.hdf5`` file
``patient_id``     yes       the patient (splits never share one)
``record_id``      no        unique id (default: ``record``, plus ``#row`` for arrays)
``row``            no        the ECG's row in an ``(N, samples, leads)`` array file
``hdf5_dataset``   no        the HDF5 array (default ``tracings``)
``sampling_rate``  arrays    Hz (WFDB headers carry their own; for WFDB it only picks among
                             copies of one ECG)
``lead_names``     no        array files' leads, separated by ``|``, ``,`` or spaces (default
                             the standard 12 in order I II III aVR aVL aVF V1-V6)
``units``          no        array files' units (default mV)
``ecg_group``      no        rows sharing a value are copies of one recording (say one ECG at
                             100 and 500 Hz); only one is kept, the highest ``sampling_rate``
``age``            no        years
``sex``            no        0/1, M/F or male/female
``af``, ``lvh``    no        1/0
``labels``         no        free text kept with the example (e.g. diagnosis codes)
=================  ========  =================================================================

Array files are ``(samples, leads)`` (or ``(N, samples, leads)`` with ``row``) in ``units``.
Splits: hash of ``patient_id``, 80/10/10 (see :mod:`pclr_jax.data.splits`).
"""

from __future__ import annotations

import os
import re
from typing import ClassVar

import numpy as np
import pandas as pd

from pclr_jax.data.builders.base import Label, standard_configs
from pclr_jax.data.builders.files import (
    FileECGBuilder,
    joined,
    parse_sex,
    read_csv,
    require_file,
)

MANIFEST_FILE = "records.csv"
ARRAY_FORMATS = {".npy": "npy", ".h5": "hdf5", ".hdf5": "hdf5"}
WFDB_EXTENSIONS = (".hea", ".dat", ".mat")


def file_format(record: str) -> str:
    """``'npy'``, ``'hdf5'`` or ``'wfdb'`` from a path's extension."""
    return ARRAY_FORMATS.get(os.path.splitext(record)[1].lower(), "wfdb")


def folder_manifest(table: pd.DataFrame, root) -> pd.DataFrame:
    """The manifest of a ``records.csv`` table with paths under ``root``.

    Raises:
        ValueError: missing ``record``/``patient_id`` columns, or array files without a
            ``sampling_rate``.
    """
    missing = {"record", "patient_id"} - set(table)
    if missing:
        raise ValueError(f"{MANIFEST_FILE} lacks columns {sorted(missing)}")
    table = table.reset_index(drop=True)
    record = table["record"].astype(str)
    formats = record.map(file_format)
    is_wfdb = formats == "wfdb"
    record = record.where(~is_wfdb, record.map(_strip_wfdb_extension))
    manifest = pd.DataFrame({"path": joined(root, record), "format": formats})
    manifest["record_id"] = record
    if "row" in table:
        manifest["row"] = pd.to_numeric(table["row"])
        suffix = manifest["row"].map(lambda r: "" if pd.isna(r) else f"#{int(r)}")
        manifest["record_id"] = record + suffix
    if "record_id" in table:
        manifest["record_id"] = table["record_id"].astype(str)
    manifest["patient_id"] = table["patient_id"]
    manifest["hdf5_dataset"] = table.get("hdf5_dataset", pd.Series("tracings", index=table.index))
    manifest["hdf5_dataset"] = manifest["hdf5_dataset"].fillna("tracings")
    if "sampling_rate" in table:
        manifest["sampling_rate"] = pd.to_numeric(table["sampling_rate"], errors="coerce")
    no_rate = ~is_wfdb & manifest.get("sampling_rate", pd.Series(np.nan, index=table.index)).isna()
    if no_rate.any():
        examples = table.loc[no_rate, "record"].head(3).tolist()
        raise ValueError(f"array records need a sampling_rate column value, e.g. {examples}")
    if "lead_names" in table:
        manifest["lead_names"] = table["lead_names"].map(
            lambda v: "" if pd.isna(v) else " ".join(re.split(r"[|,\s]+", str(v).strip()))
        )
    if "units" in table:
        manifest["units"] = table["units"].fillna("mV").astype(str)
    for column in ("ecg_group", "age", "af", "lvh", "labels"):
        if column in table:
            manifest[column] = table[column]
    if "sex" in table:
        manifest["sex"] = parse_sex(table["sex"])
    return manifest


def _strip_wfdb_extension(record: str) -> str:
    stem, extension = os.path.splitext(record)
    return stem if extension.lower() in WFDB_EXTENSIONS else record


class PclrEcgFolder(FileECGBuilder):
    """A folder of WFDB / HDF5 / ``.npy`` ECGs with ``records.csv`` (see the module docstring)."""

    name = "pclr_ecg_folder"
    DESCRIPTION = __doc__
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put the ECG files and {MANIFEST_FILE} (columns record, patient_id and optional "
        "record_id, row, sampling_rate, lead_names, units, ecg_group, age, sex, af, lvh, labels) "
        "in manual_dir."
    )
    LABELS: ClassVar = {"labels": Label("text", "free-text labels from records.csv")}
    BUILDER_CONFIGS: ClassVar = standard_configs()

    def _build_manifest(self, dl_manager) -> pd.DataFrame:
        root = self._manual_dir(dl_manager)
        table = read_csv(require_file(root, MANIFEST_FILE, "the record -> patient table"))
        return folder_manifest(table, root)
