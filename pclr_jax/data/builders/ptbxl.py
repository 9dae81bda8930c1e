"""``ptbxl``: PTB-XL (21,799 12-lead 10 s ECGs of 18,869 patients; Wagner et al. 2020) from a
user's copy.

``manual_dir`` holds one metadata table and the waveform folders it points to:

* a PhysioNet download: ``ptbxl_database.csv`` with ``records100/`` and/or ``records500/``
  (``filename_lr``/``filename_hr`` relative to it), or
* ``ptbxl_patient_map.csv`` (the ECG-to-patient table with columns ``ecg_id, patient_id, age, sex,
  scp_codes, strat_fold, filename_lr``) with the public 100 Hz waveforms in ``records100/``.

One example per ``ecg_id`` (PTB-XL stores each ECG at 100 and 500 Hz; the two files are the same
recording, so only one is used): the 500 Hz file when the config asks for the highest rate and
the table names one that exists, else the 100 Hz file. Splits follow PTB-XL's patient-wise
``strat_fold``: folds 1-8 train, 9 validation, 10 test.

Labels: ``age`` (PTB-XL stores ages over 89 as 300; those become NaN), ``sex``, ``af`` (an ``AFIB``
or ``AFLT`` statement), ``lvh`` (an ``LVH`` statement), ``superclass`` (multi-hot NORM, MI, STTC,
CD, HYP from the diagnostic statements, whatever their likelihood, as in PTB-XL's example code),
``scp_codes`` (the original dict as text) and ``strat_fold``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from typing import ClassVar

import numpy as np
import pandas as pd

from pclr_jax.data.builders.base import ECGConfig, Label
from pclr_jax.data.builders.files import FileECGBuilder, joined, read_csv
from pclr_jax.data.splits import splits_from_folds

SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")

# PTB-XL's diagnostic SCP statements and their superclass (``scp_statements.csv``, columns
# ``diagnostic == 1`` and ``diagnostic_class``; PTB-XL v1.0.3, CC BY 4.0).
DIAGNOSTIC_SUPERCLASS = {
    **dict.fromkeys(["NORM"], "NORM"),
    **dict.fromkeys(
        "IMI ASMI ILMI AMI ALMI INJAS LMI INJAL IPLMI IPMI INJIN INJLA PMI INJIL".split(), "MI"
    ),
    **dict.fromkeys(
        "NDT NST_ DIG LNGQT ISC_ ISCAL ISCIN ISCIL ISCAS ISCLA ANEUR EL ISCAN".split(), "STTC"
    ),
    **dict.fromkeys("LAFB IRBBB 1AVB IVCD CRBBB CLBBB LPFB WPW ILBBB 3AVB 2AVB".split(), "CD"),
    **dict.fromkeys("LVH LAO/LAE RVH RAO/RAE SEHYP".split(), "HYP"),
}
AF_STATEMENTS = frozenset({"AFIB", "AFLT"})
LVH_STATEMENTS = frozenset({"LVH"})
AGE_OVER_89 = 300.0
METADATA_FILES = ("ptbxl_database.csv", "ptbxl_patient_map.csv")


@dataclasses.dataclass(eq=False)
class PtbxlConfig(ECGConfig):
    """``rate``: ``'highest'`` (500 Hz when present, else 100 Hz) or ``'100'`` (100 Hz only)."""

    rate: str = "highest"


def superclass_multi_hot(codes: dict[str, float]) -> np.ndarray:
    """``(5,)`` int64: 1 where any diagnostic statement of that superclass is present."""
    present = {DIAGNOSTIC_SUPERCLASS[c] for c in codes if c in DIAGNOSTIC_SUPERCLASS}
    return np.array([int(name in present) for name in SUPERCLASSES], np.int64)


def ptbxl_manifest(metadata: pd.DataFrame, root, rate: str = "highest") -> pd.DataFrame:
    """The manifest of PTB-XL rows (one per ECG) with paths under ``root``.

    Args:
        metadata: ``ptbxl_database.csv`` or ``ptbxl_patient_map.csv`` rows.
        root: the folder that ``filename_lr``/``filename_hr`` are relative to.
        rate: ``'highest'`` or ``'100'``.
    """
    if rate not in ("highest", "100"):
        raise ValueError(f"rate must be 'highest' or '100', got {rate!r}")
    missing = {"ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr"} - set(metadata)
    if missing:
        raise ValueError(f"PTB-XL metadata lacks columns {sorted(missing)}")
    codes = metadata["scp_codes"].map(ast.literal_eval)
    path = joined(root, metadata["filename_lr"])
    rates = pd.Series(100.0, index=metadata.index)
    if rate == "highest" and "filename_hr" in metadata:
        hr = metadata["filename_hr"].notna()
        hr_path = joined(root, metadata["filename_hr"].fillna(""))
        exists = hr & hr_path.map(lambda p: os.path.exists(p + ".hea"))
        path = path.where(~exists, hr_path)
        rates = rates.where(~exists, 500.0)
    age = pd.to_numeric(metadata.get("age"), errors="coerce")
    record_id = metadata["ecg_id"].astype(np.int64).astype(str)
    return pd.DataFrame(
        {
            "record_id": record_id,
            "patient_id": pd.to_numeric(metadata["patient_id"]).astype(np.int64).astype(str),
            "ecg_group": record_id,
            "path": path,
            "format": "wfdb",
            "sampling_rate": rates,
            "age": age.where(age != AGE_OVER_89),
            "sex": metadata.get("sex"),
            "af": codes.map(lambda c: int(bool(AF_STATEMENTS & c.keys()))),
            "lvh": codes.map(lambda c: int(bool(LVH_STATEMENTS & c.keys()))),
            "superclass": codes.map(superclass_multi_hot),
            "scp_codes": metadata["scp_codes"].astype(str),
            "strat_fold": metadata["strat_fold"],
            "split": splits_from_folds(metadata["strat_fold"].astype(np.int64)),
        }
    )


class Ptbxl(FileECGBuilder):
    """PTB-XL from a user's copy (see the module docstring)."""

    name = "ptbxl"
    DESCRIPTION = __doc__
    HOMEPAGE = "https://physionet.org/content/ptb-xl/"
    CITATION = (
        "Wagner P, Strodthoff N, Bousseljot R-D, Kreiseler D, Lunze FI, Samek W, Schaeffter T. "
        "PTB-XL, a large publicly available electrocardiography dataset. Scientific Data 7:154 "
        "(2020). doi:10.1038/s41597-020-0495-6"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put ptbxl_database.csv with records100/ and/or records500/ from "
        "https://physionet.org/content/ptb-xl/ (or ptbxl_patient_map.csv with records100/) in "
        "manual_dir."
    )
    LABELS: ClassVar = {
        "superclass": Label("multi_hot", "diagnostic superclasses, 1 present", SUPERCLASSES),
        "scp_codes": Label("text", "PTB-XL scp_codes {statement: likelihood %}"),
        "strat_fold": Label("int", "PTB-XL stratified fold 1-10"),
    }
    BUILDER_CONFIGS: ClassVar = [
        PtbxlConfig(name="default", description="4096 samples over 10 s, 500 Hz source if present"),
        PtbxlConfig(
            name="lr", description="4096 samples over 10 s from the 100 Hz files", rate="100"
        ),
        PtbxlConfig(
            name="cpu",
            description="1024 samples over 10 s from the 100 Hz files (CPU-sized jobs)",
            n_samples=1024,
            rate="100",
        ),
        PtbxlConfig(name="tiny", description="256 samples over 10 s (tests)", n_samples=256),
    ]

    def _build_manifest(self, dl_manager) -> pd.DataFrame:
        root = self._manual_dir(dl_manager)
        found = [name for name in METADATA_FILES if (root / name).exists()]
        if not found:
            raise FileNotFoundError(f"{root} has none of {METADATA_FILES}")
        metadata = read_csv(root / found[0])
        return ptbxl_manifest(metadata, root, self.builder_config.rate)
