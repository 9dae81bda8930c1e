"""Patient-level supervised contrastive loss (SupCon ``L_out``, Khosla et al. 2020, with patients).

Every one of the ``2G`` L2-normalised projections of the GLOBAL batch (both views) is an anchor
``i``, scored against the ``2G - 1`` others at temperature ``t``. Its positives ``P(i)`` are all
other projections of the same patient, in either view and any pair: the other view of its own pair
and both views of any other pair of that patient (so a patient drawn twice never serves as its own
negative)::

    l_i  = -(1 / |P(i)|) sum_{p in P(i)} log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) )
    loss = mean_{i in view a} l_i + mean_{i in view b} l_i

The two directions are summed as in PCLR's NT-Xent, so with all-distinct patients ``|P(i)| = 1``
and the loss EQUALS ``ntxent`` (same value and gradients). ``contrastive_accuracy``: fraction of
anchors whose highest-scoring other projection belongs to the same patient, ties broken as in
ml4h's ``simclr_accuracy`` (the first maximum over the other view's columns, then its own view's),
so that it equals ``ntxent``'s accuracy with distinct patients and a collapsed batch scores the
chance rate, not 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pclr_jax.losses.similarity import contrastive_row_stats, two_view_layout


def patient_supcon(
    z_a: jax.Array,
    z_b: jax.Array,
    patient_ids: jax.Array,
    loss_params: dict,
    *,
    axis_name: str | None = None,
    temperature: float = 0.1,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multi-positive loss of ``(local_batch, dim)`` projections and ``(local_batch,)`` ids.

    ``loss_params`` is unused. Returns ``(loss, {'contrastive_accuracy'})``, this device's share.
    """
    del loss_params
    views = two_view_layout(z_a, z_b, patient_ids, axis_name)
    stats = contrastive_row_stats(
        views.queries,
        views.keys,
        views.query_patients,
        views.key_patients,
        temperature=temperature,
        query_positions=views.query_positions,
        key_positions=views.key_positions,
        query_rank_offsets=views.query_rank_offsets,
        chunk_size=chunk_size,
    )
    loss = 2.0 * jnp.mean(stats.mean_positive_nll())
    return loss, {"contrastive_accuracy": jnp.mean(stats.top1_is_positive())}
