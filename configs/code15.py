"""PCLR pretraining on CODE-15% (345,779 exams of 233,770 patients, 400 Hz; prepare it first with
``pclr prepare code15 --manual-dir ...``)."""

import ml_collections

from configs import pclr_paper


def get_config() -> ml_collections.ConfigDict:
    c = pclr_paper.get_config()
    c.data.name = "code15"
    c.data.config = "default"
    c.data.prepare_if_missing = False
    c.batch_pairs = 1024
    c.total_steps = 100_000
    c.eval.probe_tasks = ("sex:binary", "age:regression", "af:binary")
    return c
