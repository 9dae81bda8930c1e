"""A seconds-long smoke run of the whole pipeline (tiny model on ``pclr_synthetic/tiny``).

Used by the tests (training loop, resume, signals) and handy to check an installation:
``python train.py --config=configs/smoke.py --workdir=runs/smoke``.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.config = "tiny"
    c.model.n_samples = 256
    c.model.stem_filters = 8
    c.model.unit_samples = (64, 16, 8, 4)
    c.model.unit_filters = (16, 16, 24, 32)
    c.model.kernel_size = 5
    c.model.head_sizes = (32, 32)
    c.batch_pairs = 8
    c.total_steps = 12
    c.optimizer.warmup_steps = 2
    c.checkpoint.every_steps = 3
    c.checkpoint.keep = 2
    c.log_every_steps = 1
    c.eval.every_steps = 6
    c.eval.batch_size = 32
    return c
