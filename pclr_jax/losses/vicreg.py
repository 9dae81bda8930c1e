"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022).

A non-contrastive baseline on the raw projections ``x = z_a``, ``y = z_b`` (no normalisation),
``dim = D``, over the GLOBAL batch of ``G`` pairs::

    invariance = mean over rows and dims of (x - y) ** 2
    variance   = (mean_d relu(1 - sqrt(Var(x_d) + eps)) + (same for y)) / 2
    covariance = ( sum_{d != e} Cov(x)_de ** 2 + sum_{d != e} Cov(y)_de ** 2 ) / D
    loss = 25 invariance + 25 variance + 1 covariance

with unbiased (``G - 1``) variances and covariances, as in the authors' code (``main_vicreg.py``),
which departs from the paper's equations in two places: the invariance term is a MEAN over the
``D`` dimensions where Eq. 5 sums over them (a factor ``D``), and the variance term is the mean of
the two views' terms (halved) where Algorithm 1 adds them. The off-diagonal sum is taken over the
off-diagonal squares directly, as the official code does; ``sum(Cov ** 2) - sum(diag ** 2)``
cancels catastrophically in float32 once variances are large. Under sharding the
invariance term is this device's local mean (its ``pmean`` is the global mean) and the variance and
covariance use GLOBAL moments: the batch mean and the ``D x D`` scatter matrix are summed over
devices with ``lax.psum``, so every device holds the same global value of those two terms.
Metrics: the three unweighted terms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pclr_jax.losses.similarity import check_views, global_batch_size


def _global_covariance(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Unbiased ``(dim, dim)`` covariance of the global batch whose local rows are ``x``."""
    g = global_batch_size(x.shape[0], axis_name)
    if g < 2:
        raise ValueError(f"vicreg needs a global batch of at least 2 pairs, got {g}")
    total = jnp.sum(x, axis=0)
    if axis_name is not None:
        total = lax.psum(total, axis_name)
    centred = x - total / g
    scatter = jnp.matmul(centred.T, centred, precision=lax.Precision.HIGHEST)
    if axis_name is not None:
        scatter = lax.psum(scatter, axis_name)
    return scatter / (g - 1)


def _variance_and_covariance_terms(
    x: jax.Array, axis_name: str | None, epsilon: float
) -> tuple[jax.Array, jax.Array]:
    cov = _global_covariance(x, axis_name)
    dim = x.shape[1]
    variances = jnp.diagonal(cov)
    variance_term = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(variances + epsilon)))
    off_diagonal = jnp.where(jnp.eye(dim, dtype=bool), 0.0, cov)
    return variance_term, jnp.sum(off_diagonal**2) / dim


def vicreg(
    z_a: jax.Array,
    z_b: jax.Array,
    patient_ids: jax.Array,
    loss_params: dict,
    *,
    axis_name: str | None = None,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    epsilon: float = 1e-4,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """VICReg of ``(local_batch, dim)`` projections; ``patient_ids`` and ``loss_params`` unused.

    Returns ``(loss, {'invariance', 'variance', 'covariance'})``, this device's share.
    """
    del loss_params
    check_views(z_a, z_b, patient_ids)
    x = z_a.astype(jnp.float32)
    y = z_b.astype(jnp.float32)
    invariance = jnp.mean((x - y) ** 2)
    var_x, cov_x = _variance_and_covariance_terms(x, axis_name, epsilon)
    var_y, cov_y = _variance_and_covariance_terms(y, axis_name, epsilon)
    variance = (var_x + var_y) / 2.0
    covariance = cov_x + cov_y
    loss = (
        invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    )
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
