"""Measured matrix-product peak of this machine through XLA (the roof for "fraction of peak").

A square ``n x n`` product costs ``2 n^3`` FLOPs. The peak is the best of ``repeats`` timed
samples after one warm-up, per dtype: float32 products (default precision: TF32 on recent NVIDIA
GPUs, one bf16 pass on TPU), and bfloat16 inputs and outputs. Each sample runs enough products
back to back to last about 50 ms, so dispatch overhead does not hide a fast device's rate. It is
what XLA achieves, not the hardware's nominal peak (on the Zen 4 development machine oneDNN's
bfloat16 product reached about twice XLA's: 845 vs 380 GFLOP/s, ``docs/benchmarks.md``).

``pclr bench`` measures it in a CHILD process (``python -m pclr_jax.benchmarking.peaks``, one
JSON line out), never in its own: JAX preallocates most of an accelerator's memory in the first
process that touches it, which would leave the contenders (and a PyTorch peer) without memory.
The child also reports the device it ran on (:func:`device_facts`).

:func:`published_bf16_tflops` is the other roof: the device's published dense bf16 peak, from a
table by JAX ``device_kind``.
"""

from __future__ import annotations

import argparse
import json
import time

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
SAMPLE_S = 0.05  # target length of one timed sample

# Published dense (no sparsity) bf16 peak per device, TFLOP/s, from the vendors' datasheets
# (NVIDIA H100/H200/A100/L4/L40S/B200 datasheets; Google Cloud TPU system architecture pages).
# Matched against JAX's ``device_kind`` lower-cased, first match wins (specific names first).
PUBLISHED_BF16_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),  # SXM
    ("gh200", 989.0),
    ("h200 nvl", 835.0),
    ("h200", 989.0),  # SXM
    ("b200", 2250.0),
    ("a100", 312.0),
    ("l40s", 362.0),
    ("l4", 121.0),
    ("tpu v4", 275.0),
    ("tpu v5 lite", 197.0),  # v5e
    ("tpu v5e", 197.0),
    ("tpu v5", 459.0),  # v5p
    ("tpu v6 lite", 918.0),  # v6e (Trillium)
    ("tpu v6e", 918.0),
)


def published_bf16_tflops(device_kind: str) -> float | None:
    """The published dense bf16 peak (TFLOP/s) of a JAX ``device_kind``; None if unknown."""
    kind = device_kind.lower()
    return next((peak for name, peak in PUBLISHED_BF16_TFLOPS if name in kind), None)


def matmul_peak_gflops(dtype: str = "fp32", n: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n x n`` matrix product in ``dtype`` (``fp32`` or ``bf16``) on
    JAX's default device."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), DTYPES[dtype])  # made on the device
    b = jax.random.normal(key_b, (n, n), DTYPES[dtype])
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    start = time.perf_counter()
    product(a, b).block_until_ready()
    calls = max(1, int(SAMPLE_S / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = product(a, b)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * n**3 / best / 1e9


def device_facts() -> dict:
    """JAX's backend and its devices: platform, kind (e.g. ``NVIDIA H100 80GB HBM3``), count."""
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="XLA matrix-product peak, one JSON line out")
    parser.add_argument("--size", type=int, default=4096, help="n of the n^3 product (0: skip)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    peaks = (
        {dtype: matmul_peak_gflops(dtype, args.size, args.repeats) for dtype in DTYPES}
        if args.size
        else {}
    )
    print(json.dumps({"peaks": peaks, **device_facts()}), flush=True)


if __name__ == "__main__":
    main()
