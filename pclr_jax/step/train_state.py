"""The train state: everything a pretraining run updates, as one pytree, replicated on the mesh."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import ContrastiveLoss
from pclr_jax.model.encoder import EncoderConfig, PCLRModel


class TrainState(flax.struct.PyTreeNode):
    """State of a pretraining run (all float32, whatever the compute dtype).

    Attributes:
      step: int32 scalar, the number of optimizer updates applied.
      params: ``{'model': PCLRModel params {'encoder', 'head'}, 'loss': learnable loss params}``.
      batch_stats: the model's batch-norm running statistics ``{'encoder': ...}``.
      opt_state: the optax state of ``params``.
      rng: raw ``uint32`` key data (``jax.random.key_data``) from which each step's dropout keys are
        derived by folding in the step and the device index; stored raw so that checkpoints hold a
        plain array.
    """

    step: jax.Array
    params: dict[str, Any]
    batch_stats: dict[str, Any]
    opt_state: optax.OptState
    rng: jax.Array


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole by every device of ``mesh``."""
    return NamedSharding(mesh, P())


def _raw_key(rng: jax.Array) -> jax.Array:
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    return rng


def weight_and_dropout_keys(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two keys a run seeded by ``rng`` (typed or raw) derives: the first initialises the
    weights (``PCLRModel.init``), the second seeds the dropout stream. A run's initial encoder
    is therefore ``init_variables(model_config, weight_and_dropout_keys(rng)[0])``."""
    keys = jax.random.split(jax.random.wrap_key_data(_raw_key(rng)))
    return keys[0], keys[1]


def create_train_state(
    model_config: EncoderConfig,
    loss: ContrastiveLoss,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
) -> TrainState:
    """A freshly initialised state, replicated on every device of ``mesh``.

    Computed by one jitted function whose outputs are placed replicated, so every process of a
    multi-host job holds the same state without transferring it (all start from the same ``rng``).

    Args:
      model_config: the encoder and head to train.
      loss: the contrastive loss; its ``init_params()`` become ``params['loss']``.
      optimizer: from :func:`pclr_jax.step.optimizers.make_optimizer`.
      rng: a PRNG key (typed or raw); it seeds the weights and the dropout stream.
      mesh: the ``'data'`` mesh of :func:`pclr_jax.runtime.distributed.make_mesh`.
    """
    model = PCLRModel(model_config)
    dummy = jnp.zeros((1, model_config.n_samples, model_config.n_leads), jnp.float32)

    def init(raw_key: jax.Array) -> TrainState:
        init_key, dropout_key = weight_and_dropout_keys(raw_key)
        variables = model.init(init_key, dummy, train=False)
        params = {"model": variables["params"], "loss": loss.init_params()}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=optimizer.init(params),
            rng=jax.random.key_data(dropout_key),
        )

    return jax.jit(init, out_shardings=replicated(mesh))(_raw_key(rng))
