"""The default job with another loss: ``--config=configs/loss_variants.py:NAME``.

NAME is a key of the loss registry (``pclr_jax.losses.LOSSES``): ntxent, patient_supcon, cmsc,
siglip or vicreg. Each variant starts from its registry defaults; the values set here are the
ones its paper recommends where they differ from those defaults.
"""

import ml_collections

from configs import default

RECOMMENDED_HPARAMS = {
    "ntxent": {"temperature": 0.1},
    "patient_supcon": {"temperature": 0.1},
    "cmsc": {"temperature": 0.1},
    "siglip": {},
    "vicreg": {},
}


def get_config(loss_name: str = "ntxent") -> ml_collections.ConfigDict:
    if loss_name not in RECOMMENDED_HPARAMS:
        raise ValueError(f"unknown loss {loss_name!r}; one of {sorted(RECOMMENDED_HPARAMS)}")
    c = default.get_config()
    c.loss.name = loss_name
    c.loss.hparams = ml_collections.ConfigDict(RECOMMENDED_HPARAMS[loss_name])
    return c
