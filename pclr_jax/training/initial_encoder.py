"""The encoder a training run starts from, exported as ``train_and_evaluate`` exports a trained one
(``pclr study``'s untrained baseline cells)."""

from __future__ import annotations

import os

import jax
import ml_collections

from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.step.train_state import weight_and_dropout_keys
from pclr_jax.training.data_setup import ensure_prepared
from pclr_jax.weights.encoder_checkpoint import save_encoder


def export_initial_encoder(config: ml_collections.ConfigDict, directory: str | os.PathLike) -> None:
    """Writes to ``directory`` (an Orbax encoder directory, like a run's ``encoder/``) the model,
    head included, that a run of the training ``config`` starts from: ``init_variables`` at the
    first of the two keys ``create_train_state`` splits from ``config.seed``. Prepares the data
    set first where the run would (``config.data``), so the encoder can be evaluated on it."""
    model_config = EncoderConfig.from_dict(config.model.to_dict())
    ensure_prepared(config.data, model_config.n_samples)
    weights_key, _ = weight_and_dropout_keys(jax.random.key(int(config.seed)))
    variables = jax.device_get(init_variables(model_config, weights_key))
    save_encoder(directory, model_config, variables, {"step": 0}, overwrite=True)
