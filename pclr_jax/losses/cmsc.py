"""CMSC, contrastive multi-segment coding of CLOCS (Kiyasseh, Zhu & Clifton, ICML 2021).

The two views are scored only ACROSS views: with ``h = l2_normalize(z)`` and ``s_ij = a_i . b_j``
over the GLOBAL batch, anchor ``a_i`` is normalised over every ``b_j`` (CLOCS' row sums) and anchor
``b_j`` over every ``a_i`` (its column sums). The positives of an anchor are the other view's
projections of the same patient (the own pair's and those of any other pair of that patient)::

    l(a_i) = -(1 / |P(i)|) sum_{j in P(i)} log( exp(s_ij / t) / sum_k exp(s_ik / t) )
    loss   = (mean_i l(a_i) + mean_j l(b_j)) / 2

computed with a logsumexp: CLOCS' code exponentiates ``s / t`` directly, which overflows float32
once ``1 / t`` exceeds about 88 (and its users report NaN losses). With all-distinct patients this
is CLOCS' value exactly, ``(loss_diag1 + loss_diag2) / 2``. With repeated patients CLOCS averages
its extra same-patient pairs in separate terms, upper triangle by rows and lower triangle by
columns; here every anchor averages over all of its positives and both directions are symmetric.
``contrastive_accuracy``: fraction of anchors whose best match in the other view is the patient
(a strict arg-max: of tied columns the first in global order counts, as ``argmax`` does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pclr_jax.losses.similarity import (
    check_views,
    contrastive_row_stats,
    gather_rows,
    l2_normalize,
)


def cmsc(
    z_a: jax.Array,
    z_b: jax.Array,
    patient_ids: jax.Array,
    loss_params: dict,
    *,
    axis_name: str | None = None,
    temperature: float = 0.1,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CMSC of ``(local_batch, dim)`` projections with ``(local_batch,)`` patient ids.

    ``loss_params`` is unused. Returns ``(loss, {'contrastive_accuracy'})``, this device's share.
    """
    del loss_params
    check_views(z_a, z_b, patient_ids)
    h_a = l2_normalize(z_a.astype(jnp.float32))
    h_b = l2_normalize(z_b.astype(jnp.float32))
    ids = patient_ids.astype(jnp.int32)
    global_ids = gather_rows(ids, axis_name)
    directions = [(h_a, gather_rows(h_b, axis_name)), (h_b, gather_rows(h_a, axis_name))]
    losses, accuracies = [], []
    for queries, keys in directions:
        stats = contrastive_row_stats(
            queries, keys, ids, global_ids, temperature=temperature, chunk_size=chunk_size
        )
        losses.append(jnp.mean(stats.mean_positive_nll()))
        accuracies.append(jnp.mean(stats.top1_is_positive()))
    loss = (losses[0] + losses[1]) / 2.0
    return loss, {"contrastive_accuracy": (accuracies[0] + accuracies[1]) / 2.0}
