"""PCLR pretraining on MIMIC-IV-ECG (~800,000 ECGs of ~160,000 patients; prepare it first with
``pclr prepare mimic_iv_ecg --manual-dir ...``). Patients with several ECGs are plentiful, so
PCLR's same-patient pairs are used as in the paper, with a larger batch."""

import ml_collections

from configs import pclr_paper


def get_config() -> ml_collections.ConfigDict:
    c = pclr_paper.get_config()
    c.data.name = "mimic_iv_ecg"
    c.data.config = "default"
    c.data.prepare_if_missing = False
    c.batch_pairs = 1024
    c.total_steps = 200_000
    c.eval.probe_tasks = ("sex:binary", "age:regression")
    return c
