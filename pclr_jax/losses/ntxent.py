"""NT-Xent, PCLR's objective: numerically the same as ml4h's ``simclr_loss`` (SimCLR, Chen 2020).

With ``h = l2_normalize(z)``, ``a = h_a``, ``b = h_b`` over the GLOBAL batch of ``G`` pairs and
temperature ``t``, row ``i`` of view a is scored against ``[a_i . b_j / t]_j`` followed by
``[a_i . a_j / t]_j`` with its own column ``a_i . a_i`` masked (ml4h subtracts 1e9, which gives it
softmax weight exactly 0 in float32; here it is excluded); its label is ``b_i``. View b likewise
against ``[b . a, b . b]``. The loss is the SUM of the two directions' mean cross-entropies::

    loss = mean_i CE([ab_i, aa_i], i) + mean_i CE([ba_i, bb_i], i)

``contrastive_accuracy`` is the fraction of the ``2G`` rows whose arg-max column is the label (the
mean of ml4h's two ``simclr_accuracy`` terms, ties included: the first maximum in ml4h's column
order ``[other view, own view]`` counts, so a collapsed batch scores ``1/G``, not 1). Patient ids
are not used: every other row is a negative, as in PCLR, whose loader puts each patient in a batch
at most once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pclr_jax.losses.similarity import contrastive_row_stats, two_view_layout


def ntxent(
    z_a: jax.Array,
    z_b: jax.Array,
    patient_ids: jax.Array,
    loss_params: dict,
    *,
    axis_name: str | None = None,
    temperature: float = 0.1,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """NT-Xent of ``(local_batch, dim)`` projections against the global batch (module docstring).

    ``patient_ids`` and ``loss_params`` are unused. Returns ``(loss, {'contrastive_accuracy'})``,
    this device's share (their ``pmean`` over ``axis_name`` is the global value).
    """
    del loss_params
    views = two_view_layout(z_a, z_b, patient_ids, axis_name)
    stats = contrastive_row_stats(
        views.queries,
        views.keys,
        views.query_pairs,
        views.key_pairs,
        temperature=temperature,
        query_positions=views.query_positions,
        key_positions=views.key_positions,
        query_rank_offsets=views.query_rank_offsets,
        chunk_size=chunk_size,
    )
    # Each view's rows are half of the queries: mean over view a + mean over view b.
    loss = 2.0 * jnp.mean(stats.mean_positive_nll())
    return loss, {"contrastive_accuracy": jnp.mean(stats.top1_is_positive())}
