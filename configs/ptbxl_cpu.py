"""CPU-sized PCLR pretraining on PTB-XL, the pretraining of the reproduction on a 2-core machine.

Prepare the data first (1,024 samples over 10 s from the public 100 Hz files)::

    pclr prepare ptbxl --manual-dir PTBXL_DIR --data-dir data/tfds --config cpu

PTB-XL's standard folds: folds 1-8 for pretraining (every ECG: the 15,022 patients of folds 1-8
include only 1,694 with two or more ECGs, so single-ECG patients are paired with an augmented
copy of their ECG), fold 9 for model selection (validation retrieval and probes), fold 10 for
reporting. The encoder is ``configs/default.py``'s: the released architecture at a quarter of its
input length (1,024 samples) and half its widths. ``configs/ptbxl.py`` is the paper-size version.

``total_steps`` = 900 steps of 64 pairs (about 3.8 passes over the 15,022 patients of folds
1-8) is what fits in ~30-40 minutes on two shared CPU cores (``docs/reproduction.md``).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.name = "ptbxl"
    c.data.config = "cpu"
    c.data.prepare_if_missing = False
    c.loader.single_ecg_patients = "augment"
    c.loader.augment = ml_collections.ConfigDict(
        {
            "time_warp": {"probability": 0.5},
            "random_crop": {"probability": 0.5},
            "drop_leads": {"probability": 0.3},
            "gaussian_noise": {"probability": 0.5},
        }
    )
    c.total_steps = 900
    c.optimizer.warmup_steps = 50
    c.checkpoint.every_steps = 250
    c.eval.every_steps = 300
    c.eval.probe_tasks = ("sex:binary", "age:regression", "af:binary", "lvh:binary")
    return c
