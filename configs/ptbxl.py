"""PCLR pretraining on PTB-XL (prepare it first: ``pclr prepare ptbxl --manual-dir ...``).

PTB-XL's standard folds: pretraining on folds 1-8 (every ECG), model selection on fold 9,
reporting on fold 10. PTB-XL has 18,869 patients of whom only 2,111 have two or more ECGs, so
with PCLR's same-patient pairs the pretraining set is small: single-ECG patients are paired with
an augmented copy of their ECG (SimCLR-style) so that every ECG of folds 1-8 is used.
"""

import ml_collections

from configs import pclr_paper


def get_config() -> ml_collections.ConfigDict:
    c = pclr_paper.get_config()
    c.data.name = "ptbxl"
    c.data.config = "default"
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
    c.batch_pairs = 128
    c.total_steps = 20_000
    c.eval.probe_tasks = ("sex:binary", "age:regression", "af:binary", "lvh:binary")
    return c
