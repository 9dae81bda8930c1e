"""tensorflow-datasets builders of prepared ECG data sets (``array_record``, no TensorFlow needed).

Importing this package registers the builders with tfds: ``pclr_synthetic`` (generated),
``ptbxl``, ``mimic_iv_ecg``, ``code15`` (a user's download in ``manual_dir``) and
``pclr_ecg_folder`` (any folder of WFDB / HDF5 / ``.npy`` files with a record -> patient CSV).

May import: signals, runtime (as the rest of data).
"""

from pclr_jax.data.builders.base import ECGBuilder, ECGConfig, Label
from pclr_jax.data.builders.code15 import Code15
from pclr_jax.data.builders.mimic_iv_ecg import MimicIvEcg
from pclr_jax.data.builders.pclr_ecg_folder import PclrEcgFolder
from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic, SyntheticBuilderConfig
from pclr_jax.data.builders.ptbxl import Ptbxl, PtbxlConfig

BUILDERS = {
    builder.name: builder for builder in (PclrSynthetic, Ptbxl, MimicIvEcg, Code15, PclrEcgFolder)
}

__all__ = [
    "BUILDERS",
    "Code15",
    "ECGBuilder",
    "ECGConfig",
    "Label",
    "MimicIvEcg",
    "PclrEcgFolder",
    "PclrSynthetic",
    "Ptbxl",
    "PtbxlConfig",
    "SyntheticBuilderConfig",
]
