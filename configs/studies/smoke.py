"""A seconds-long study on ``configs/smoke.py`` (tiny model, ``pclr_synthetic/tiny``): two arms
x two seeds. Used by the tests, and handy to check the study machinery:

    pclr study run --config configs/studies/smoke.py --workdir runs/study_smoke
"""

import ml_collections

from configs import smoke


def get_config():
    c = ml_collections.ConfigDict()
    c.name = "smoke"
    c.description = "Smoke test of the study machinery: NT-Xent at two temperatures."
    c.base = smoke.get_config()
    c.base.total_steps = 6
    c.base.eval.every_steps = 6
    c.arms = (
        ("ntxent", {"loss.name": "ntxent", "loss.hparams": {"temperature": 0.1}}),
        ("warm", {"loss.name": "ntxent", "loss.hparams": {"temperature": 0.5}}),
    )
    c.reference_arm = "ntxent"
    c.seeds = (0, 1)
    c.evaluation = ml_collections.ConfigDict()
    c.evaluation.tasks = ("sex:binary", "age:regression")
    c.evaluation.label_sizes = (40, "all")
    c.evaluation.repeats = 2
    c.evaluation.fit_split = "train"
    c.evaluation.test_split = "test"
    return c
