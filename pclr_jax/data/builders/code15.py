"""``code15``: CODE-15% (345,779 exams of 233,770 patients from Brazil's Telehealth Network of
Minas Gerais, 400 Hz; Ribeiro et al. 2021) from a user's Zenodo download.

``manual_dir`` holds ``exams.csv`` (columns ``exam_id``, ``age``, ``is_male``, ``patient_id``,
``1dAVb``, ``RBBB``, ``LBBB``, ``SB``, ``AF``, ``ST``, ``normal_ecg``, ``trace_file``...) and the
``exams_part{i}.hdf5`` files, each with ``tracings`` ``(N, 4096, 12)`` float (mV, leads DI, DII,
DIII, AVR, AVL, AVF, V1-V6) and ``exam_id`` ``(N,)``. Exams are located by ``exam_id`` in the HDF5
files (``trace_file`` is not relied on); an exam of ``exams.csv`` found in no file is quarantined
as ``missing_file``. The 4096 samples hold 10 s (4000) or 7 s (2800) exams zero-padded at both
ends: the padding is removed before resampling, so the 7 s exams are quarantined as too short
under configs that expect 10 s. Splits: hash of ``patient_id``, 80/10/10.

Labels: ``age``, ``sex`` (from ``is_male``), ``af``, and the data set's ``first_degree_av_block``,
``rbbb``, ``lbbb``, ``sinus_bradycardia``, ``sinus_tachycardia``, ``normal_ecg`` (1/0). LVH is
unknown (-1).
"""

from __future__ import annotations

from typing import ClassVar

import h5py
import numpy as np
import pandas as pd

from pclr_jax.data.builders.base import Label, standard_configs
from pclr_jax.data.builders.files import FileECGBuilder, read_csv, require_file

SAMPLING_RATE_HZ = 400.0
BINARY_LABELS = {
    "first_degree_av_block": "1dAVb",
    "rbbb": "RBBB",
    "lbbb": "LBBB",
    "sinus_bradycardia": "SB",
    "sinus_tachycardia": "ST",
    "normal_ecg": "normal_ecg",
}


def locate_exams(paths: list[str]) -> pd.DataFrame:
    """``exam_id -> (path, row)`` over CODE-15% HDF5 files (rows with exam id 0 are padding)."""
    frames = []
    for path in paths:
        with h5py.File(path, "r") as f:
            exam_ids = np.asarray(f["exam_id"][:], np.int64)
        frames.append(
            pd.DataFrame({"exam_id": exam_ids, "path": path, "row": np.arange(len(exam_ids))})
        )
    located = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["exam_id", "path", "row"])
    )
    return located[located["exam_id"] != 0].drop_duplicates("exam_id")


def _binary(column: pd.Series) -> pd.Series:
    text = column.astype(str).str.strip().str.lower()
    return text.map({"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}).fillna(-1)


def code15_manifest(exams: pd.DataFrame, located: pd.DataFrame) -> pd.DataFrame:
    """The manifest of ``exams.csv`` rows, located in the HDF5 files (``located``)."""
    missing = {"exam_id", "patient_id"} - set(exams)
    if missing:
        raise ValueError(f"exams.csv lacks columns {sorted(missing)}")
    exams = exams.assign(exam_id=exams["exam_id"].astype(np.int64)).merge(
        located, on="exam_id", how="left"
    )
    manifest = pd.DataFrame(
        {
            "record_id": exams["exam_id"].astype(str),
            "patient_id": exams["patient_id"].astype(np.int64).astype(str),
            "path": exams["path"].fillna(""),
            "format": "hdf5",
            "hdf5_dataset": "tracings",
            "row": exams["row"].fillna(-1).astype(np.int64),
            "sampling_rate": SAMPLING_RATE_HZ,
            "trim_zero_padding": True,
            "age": exams.get("age"),
            "sex": _binary(exams["is_male"]).map({1: 0, 0: 1, -1: -1})
            if "is_male" in exams
            else -1,
            "af": _binary(exams["AF"]) if "AF" in exams else -1,
        }
    )
    for name, column in BINARY_LABELS.items():
        manifest[name] = _binary(exams[column]) if column in exams else -1
    return manifest


class Code15(FileECGBuilder):
    """CODE-15% from a user's copy (see the module docstring)."""

    name = "code15"
    DESCRIPTION = __doc__
    HOMEPAGE = "https://zenodo.org/records/4916206"
    CITATION = (
        "Ribeiro AH, Paixao GMM, Lima EM, et al. CODE-15%: a large scale annotated dataset of "
        "12-lead ECGs. Zenodo (2021). doi:10.5281/zenodo.4916206"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download exams.csv and exams_part*.hdf5 (unzipped) from "
        "https://zenodo.org/records/4916206 into manual_dir."
    )
    LABELS: ClassVar = {
        name: Label("int", f"CODE-15% {column}: 1 yes, 0 no")
        for name, column in BINARY_LABELS.items()
    }
    BUILDER_CONFIGS: ClassVar = standard_configs()
    CHUNK_SIZE: ClassVar[int] = 64

    def _build_manifest(self, dl_manager) -> pd.DataFrame:
        root = self._manual_dir(dl_manager)
        exams = read_csv(require_file(root, "exams.csv", "CODE-15%'s exam table"))
        paths = sorted(str(p) for p in root.glob("exams_part*.hdf5"))
        if not paths:
            raise FileNotFoundError(f"no exams_part*.hdf5 files in {root}")
        return code15_manifest(exams, locate_exams(paths))
