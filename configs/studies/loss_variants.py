"""Every registered loss at its recommended settings, on the default job's data and budget.

    pclr study run --config configs/studies/loss_variants.py --workdir runs/study_losses

The arms are ``configs/loss_variants.py``'s (one per key of ``pclr_jax.losses.LOSSES``); the
reference is ``ntxent``, PCLR's loss. Everything else (data, steps, batch, optimizer,
evaluation) is ``configs/default.py``'s, the same for every arm.

``patient_supcon`` computes exactly ``ntxent``'s loss when every patient appears once per batch
(docs/losses.md), and the pair loader guarantees that: the two arms train identically (the
study reports them identical at every seed). The arm is kept so the study covers the registry.
"""

from configs import loss_variants
from configs.studies.common import study_config


def get_config():
    c = study_config(
        "loss_variants",
        "Every registered contrastive loss at its recommended hyper-parameters, trained on the "
        "same data for the same steps and batch size, from the same seeds.",
    )
    c.arms = tuple(
        (name, {"loss.name": name, "loss.hparams": dict(hparams)})
        for name, hparams in loss_variants.RECOMMENDED_HPARAMS.items()
    )
    c.reference_arm = "ntxent"
    return c
