"""Gradient caching (GradCache; Gao et al. 2021): exact contrastive gradients for batches whose
activations do not fit in memory.

A contrastive loss couples every row of the global batch, so the batch cannot simply be split
into micro-batches whose gradients are summed. But the loss depends on the parameters only
through the projections ``z``, so by the chain rule ``dL/dtheta = sum_k J_k^T (dL/dz_k)`` over
micro-batches ``k``. GradCache computes it in two passes:

1. Embed the whole (per-device) batch micro-batch by micro-batch WITHOUT keeping activations
   (nothing is differentiated); only the ``(2 x pairs, dim)`` projections are kept.
2. Compute the loss, with negatives from every device, and its gradient ``dL/dz`` with respect
   to the projections (the loss part is small: it sees only ``z``).
3. Re-run the model micro-batch by micro-batch under ``jax.vjp`` and pull ``dL/dz_k`` back to the
   parameters, accumulating the gradient (``lax.scan``). Peak activation memory is that of ONE
   micro-batch, at the price of a second forward pass (about 4/3 of the compute).

Batch norm. In training mode batch norm normalises with the statistics of the batch it sees, so
with micro-batches the model is a different function: each micro-batch (``m`` pairs = both views
of those pairs, ``2m`` ECGs, times the number of devices when batch norm is global) is normalised
with its own statistics ("ghost batch norm"). GradCache's gradient is EXACTLY the gradient of that
function (tested against plain autodiff of it), and it equals the full-batch step when one
micro-batch holds the whole local batch. The running statistics are updated once per step with
the micro-batches' mean statistics: ``momentum * old + (1 - momentum) * mean_k(stat_k)``. Dropout
keys are derived from the micro-batch index so that both passes see the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# forward(model_params, batch_stats, ecgs (n, samples, leads), dropout_key)
#   -> (projections (n, dim) float32, updated batch_stats)
Forward = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
# loss(z_a, z_b, loss_params) -> (loss, metrics); loss is the GLOBAL loss (already pmean'd).
PairLoss = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]]


def split_microbatches(view: jax.Array, microbatch_pairs: int) -> jax.Array:
    """``(pairs, ...)`` -> ``(pairs // microbatch_pairs, microbatch_pairs, ...)``."""
    pairs = view.shape[0]
    if microbatch_pairs < 1 or pairs % microbatch_pairs:
        raise ValueError(
            f"grad_cache_microbatch={microbatch_pairs} must divide the per-device batch of "
            f"{pairs} pairs"
        )
    return view.reshape((pairs // microbatch_pairs, microbatch_pairs) + view.shape[1:])


def microbatch_key(device_key: jax.Array, index: jax.Array | int) -> jax.Array:
    """The dropout key of micro-batch ``index`` on this device."""
    return jax.random.fold_in(device_key, index)


def cached_value_and_grad(
    forward: Forward,
    loss_fn: PairLoss,
    params: dict[str, Any],
    batch_stats: Any,
    view_a: jax.Array,
    view_b: jax.Array,
    device_key: jax.Array,
    microbatch_pairs: int,
    axis_name: str | None = None,
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], dict[str, Any], Any]:
    """Loss and gradient of ``loss_fn(forward(view_a), forward(view_b))`` by gradient caching.

    Micro-batch ``k`` is pairs ``[k m, (k + 1) m)`` of both views, run as one forward pass of
    ``2m`` ECGs (view a's rows first), exactly as the direct step runs its whole local batch.

    Args:
      forward: the model in training mode (see :data:`Forward`).
      loss_fn: the loss of the projections; must return the loss of the GLOBAL batch (inside
        ``jax.shard_map``: ``lax.pmean`` of the local loss) so its gradient is the global one.
      params: ``{'model': ..., 'loss': ...}``.
      batch_stats: running batch-norm statistics before the step.
      view_a, view_b: ``(pairs, samples, leads)`` this device's ECGs in mV; row ``i`` of both
        is the same patient.
      device_key: this device's dropout key for the step.
      microbatch_pairs: pairs per micro-batch; must divide ``pairs``.
      axis_name: the mesh axis inside ``jax.shard_map`` (None on one device): parameter
        gradients are accumulated per device and summed over the axis once, at the end.

    Returns:
      ``((loss, metrics), grads, new_batch_stats)``; ``grads`` has the structure of ``params``.
    """
    chunks_a = split_microbatches(view_a, microbatch_pairs)
    chunks_b = split_microbatches(view_b, microbatch_pairs)
    n_chunks = chunks_a.shape[0]
    model_params = params["model"]

    def chunk_inputs(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        ecgs = jnp.concatenate([chunks_a[k], chunks_b[k]], axis=0)
        return ecgs, microbatch_key(device_key, k)

    # Pass 1: projections of every micro-batch, no activations kept (nothing is differentiated).
    def embed_chunk(k: jax.Array) -> tuple[jax.Array, Any]:
        ecgs, key = chunk_inputs(k)
        return forward(lax.stop_gradient(model_params), batch_stats, ecgs, key)

    projections, chunk_stats = lax.map(embed_chunk, jnp.arange(n_chunks))
    new_batch_stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), chunk_stats)
    dim = projections.shape[-1]
    z_a = projections[:, :microbatch_pairs].reshape(-1, dim)
    z_b = projections[:, microbatch_pairs:].reshape(-1, dim)

    # Pass 2: the loss and its gradient with respect to the projections (and loss parameters).
    (loss, metrics), (grad_z_a, grad_z_b, grad_loss_params) = jax.value_and_grad(
        loss_fn, argnums=(0, 1, 2), has_aux=True
    )(z_a, z_b, params["loss"])
    cotangents = jnp.concatenate(
        [grad_z_a.reshape(n_chunks, microbatch_pairs, dim), grad_z_b.reshape(n_chunks, -1, dim)],
        axis=1,
    )

    # Pass 3: pull each micro-batch's cotangent back to the parameters. The parameters are made
    # device-varying so that each device accumulates its own share, summed once afterwards.
    local_params = (
        model_params if axis_name is None else lax.pcast(model_params, axis_name, to="varying")
    )

    def accumulate(total: Any, k: jax.Array) -> tuple[Any, None]:
        ecgs, key = chunk_inputs(k)
        _, pullback = jax.vjp(lambda p: forward(p, batch_stats, ecgs, key)[0], local_params)
        (grad,) = pullback(cotangents[k])
        return jax.tree.map(jnp.add, total, grad), None

    zeros = jax.tree.map(jnp.zeros_like, local_params)
    grad_model, _ = lax.scan(accumulate, zeros, jnp.arange(n_chunks))
    if axis_name is not None:
        grad_model = lax.psum(grad_model, axis_name)
    grads = {"model": grad_model, "loss": grad_loss_params}
    return (loss, metrics), grads, new_batch_stats
