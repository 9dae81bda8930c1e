"""``mimic_iv_ecg``: MIMIC-IV-ECG (about 800,000 diagnostic 12-lead ECGs of about 160,000
patients, 500 Hz, 10 s; Gow et al. 2023) from a user's credentialed PhysioNet download.

``manual_dir`` is the data set's root as downloaded: ``record_list.csv`` (columns
``subject_id``, ``study_id``, ``file_name``, ``ecg_time``, ``path``) and WFDB records under
``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN`` (``path`` is relative to the root, without
extension). Record id: ``study_id``; patient: ``subject_id``. The table carries no age, sex or
diagnosis labels (they live in MIMIC-IV's clinical modules), so those are unknown (-1 / NaN).
Splits: hash of ``subject_id``, 80/10/10.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from pclr_jax.data.builders.base import standard_configs
from pclr_jax.data.builders.files import FileECGBuilder, joined, read_csv, require_file


def mimic_manifest(record_list: pd.DataFrame, root) -> pd.DataFrame:
    """The manifest of ``record_list.csv`` rows with paths under ``root``."""
    missing = {"subject_id", "study_id", "path"} - set(record_list)
    if missing:
        raise ValueError(f"record_list.csv lacks columns {sorted(missing)}")
    return pd.DataFrame(
        {
            "record_id": record_list["study_id"].astype(np.int64).astype(str),
            "patient_id": record_list["subject_id"].astype(np.int64).astype(str),
            "path": joined(root, record_list["path"]),
            "format": "wfdb",
        }
    )


class MimicIvEcg(FileECGBuilder):
    """MIMIC-IV-ECG from a user's copy (see the module docstring)."""

    name = "mimic_iv_ecg"
    DESCRIPTION = __doc__
    HOMEPAGE = "https://physionet.org/content/mimic-iv-ecg/"
    CITATION = (
        "Gow B, Pollard T, Nathanson LA, Johnson A, Moody B, Fernandes C, Greenbaum N, Waks JW, "
        "Eslami P, Carbonati T, Chaudhari A, Herbst E, Moukheiber D, Berkowitz S, Mark R, "
        "Horng S. MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset. PhysioNet (2023). "
        "doi:10.13026/4nqg-sb35"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download https://physionet.org/content/mimic-iv-ecg/ (credentialed access) and pass its "
        "root (with record_list.csv and files/) as manual_dir."
    )
    BUILDER_CONFIGS: ClassVar = standard_configs()

    def _build_manifest(self, dl_manager) -> pd.DataFrame:
        root = self._manual_dir(dl_manager)
        table = require_file(root, "record_list.csv", "MIMIC-IV-ECG's record list")
        return mimic_manifest(read_csv(table), root)
