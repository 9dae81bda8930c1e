"""Contrastive (and one non-contrastive) losses for PCLR pretraining, chosen by name.

``get_loss(name, axis_name=None, **hparams)`` returns a :class:`ContrastiveLoss`; ``LOSSES`` maps
each name to its definition; ``register`` adds a variant. See ``docs/losses.md``.

May import: nothing else of pclr_jax.
"""

from pclr_jax.losses.registry import (
    LOSSES,
    ContrastiveLoss,
    LossDefinition,
    get_loss,
    register,
)

__all__ = ["LOSSES", "ContrastiveLoss", "LossDefinition", "get_loss", "register"]
