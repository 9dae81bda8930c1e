"""SigLIP: pairwise sigmoid loss with a learnable temperature and bias (Zhai et al., ICCV 2023).

With ``x = l2_normalize(z_a)`` (this device's rows), ``y = l2_normalize(z_b)`` over the GLOBAL
batch, ``T = exp(log_temperature)`` and bias ``b`` (both learnable, in ``loss_params``), every pair
``(i, j)`` is an independent binary problem with label ``y_ij = +1`` when rows ``i`` and ``j`` are
the same patient and ``-1`` otherwise::

    loss = -(1 / G) sum_i sum_j log sigmoid( y_ij (T x_i . y_j + b) )

(a sum over columns, a mean over the ``G`` anchor rows, as in the paper). The initial values
``T = 10`` and ``b = -10`` are the paper's; they are hyper-parameters of :func:`siglip_init_params`.
Metrics: ``contrastive_accuracy`` (the best view-b match of an a-row is the same patient; a strict
arg-max, ties to the first column in global order as ``argmax`` does), ``temperature`` and
``bias``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pclr_jax.losses.similarity import (
    HIGHEST,
    TopOne,
    check_views,
    column_keys,
    empty_top_one,
    gather_rows,
    l2_normalize,
    scan_column_blocks,
    update_top_one,
)


def siglip_init_params(
    *, init_temperature: float = 10.0, init_bias: float = -10.0
) -> dict[str, jax.Array]:
    """``{'log_temperature': log(init_temperature), 'bias': init_bias}`` as float32 scalars."""
    if not init_temperature > 0:
        raise ValueError(f"init_temperature must be > 0, got {init_temperature!r}")
    return {
        "log_temperature": jnp.asarray(math.log(init_temperature), jnp.float32),
        "bias": jnp.asarray(init_bias, jnp.float32),
    }


class _SigmoidRows(NamedTuple):
    nll: jax.Array
    top_one: TopOne


def siglip(
    z_a: jax.Array,
    z_b: jax.Array,
    patient_ids: jax.Array,
    loss_params: dict,
    *,
    axis_name: str | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sigmoid loss of ``(local_batch, dim)`` projections; ``loss_params`` from the initialiser.

    Returns ``(loss, {'contrastive_accuracy', 'temperature', 'bias'})``, this device's share.
    """
    check_views(z_a, z_b, patient_ids)
    missing = {"log_temperature", "bias"} - set(loss_params)
    if missing:
        raise ValueError(f"siglip needs loss_params {sorted(missing)} (see init_params())")
    scale = jnp.exp(loss_params["log_temperature"])
    bias = loss_params["bias"]
    x = l2_normalize(z_a.astype(jnp.float32))
    ids = patient_ids.astype(jnp.int32)
    columns = {
        "keys": gather_rows(l2_normalize(z_b.astype(jnp.float32)), axis_name),
        "ids": gather_rows(ids, axis_name),
    }
    columns["index"] = jnp.arange(columns["ids"].shape[0], dtype=jnp.int32)

    def body(carry: _SigmoidRows, block: dict[str, jax.Array]) -> _SigmoidRows:
        logits = scale * jnp.dot(x, block["keys"].T, precision=HIGHEST) + bias
        positive = ids[:, None] == block["ids"][None, :]
        signs = jnp.where(positive, 1.0, -1.0)
        valid = block["valid"][None, :]
        nll = -jnp.sum(jnp.where(valid, jax.nn.log_sigmoid(signs * logits), 0.0), axis=1)
        scores = jnp.where(valid, logits, jnp.float32(-jnp.inf))
        keys = column_keys(block["index"], None)
        return _SigmoidRows(
            nll=carry.nll + nll,
            top_one=update_top_one(carry.top_one, scores, keys, positive & valid),
        )

    n = x.shape[0]
    init = _SigmoidRows(jnp.zeros((n,), jnp.float32), empty_top_one(n))
    rows = scan_column_blocks(body, init, columns, chunk_size)
    accuracy = jnp.mean(rows.top_one.positive.astype(jnp.float32))
    metrics = {"contrastive_accuracy": accuracy, "temperature": scale, "bias": bias}
    return jnp.mean(rows.nll), metrics
