"""What every shipped study shares: the base training config, seeds and the evaluation.

The evaluation fits linear probes on 100, 500 and all training-split ECGs (3 random label draws
below "all") and scores them, with patient retrieval, on the held-out test split.
"""

import ml_collections

from configs import default


def study_config(name: str, description: str) -> ml_collections.ConfigDict:
    """A study on ``configs/default.py`` with seeds 0-2; the caller adds ``arms`` and
    ``reference_arm``."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.description = description
    c.base = default.get_config()
    c.seeds = (0, 1, 2)
    c.evaluation = ml_collections.ConfigDict()
    c.evaluation.tasks = tuple(c.base.eval.probe_tasks)
    c.evaluation.label_sizes = (100, 500, "all")
    c.evaluation.repeats = 3
    c.evaluation.fit_split = c.base.data.train_split
    c.evaluation.test_split = c.base.eval.final_split
    return c
