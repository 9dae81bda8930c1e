"""Measured matrix-product peak of this machine through XLA (the roof for "fraction of peak").

A square ``n x n`` product costs ``2 n^3`` FLOPs. The peak is the best of ``repeats`` timed calls
after one warm-up, per dtype: float32 products, and bfloat16 inputs and outputs. It is what XLA's
CPU backend achieves, not the hardware's nominal peak (on the Zen 5 machine of
``/work/shared/FINDINGS.md`` oneDNN reaches about twice XLA's bfloat16 rate).
"""

from __future__ import annotations

import time

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def matmul_peak_gflops(dtype: str = "fp32", n: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n x n`` matrix product in ``dtype`` (``fp32`` or ``bf16``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n), np.float32), DTYPES[dtype])
    b = jnp.asarray(rng.standard_normal((n, n), np.float32), DTYPES[dtype])
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
