"""Negatives per step (the large-batch question) at an equal number of ECGs seen.

    pclr study run --config configs/studies/batch_size.py --workdir runs/study_batch

Each arm trains NT-Xent with ``pairs`` pairs per step (2·pairs - 2 negatives per anchor) for
``default steps × 64 / pairs`` steps, so every arm sees the same number of ECGs; the steps and
batch size differ by design (the report lists them). The learning rate is the default's (Adam,
no scaling with the batch); warm-up keeps the same fraction of training.
"""

from configs.studies.common import study_config

REFERENCE_PAIRS = 64
PAIRS = (16, 32, 64, 128)


def get_config():
    c = study_config(
        "batch_size",
        "NT-Xent with 16 to 128 pairs per step, each arm trained on the same number of ECGs "
        "(fewer steps for larger batches).",
    )
    steps, warmup = c.base.total_steps, c.base.optimizer.warmup_steps
    c.arms = tuple(
        (
            f"pairs{pairs}",
            {
                "batch_pairs": pairs,
                "total_steps": steps * REFERENCE_PAIRS // pairs,
                "optimizer.warmup_steps": max(1, warmup * REFERENCE_PAIRS // pairs),
            },
        )
        for pairs in PAIRS
    )
    c.reference_arm = f"pairs{REFERENCE_PAIRS}"
    return c
