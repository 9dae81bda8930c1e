"""The largest training batch that fits on one device, from XLA's memory plan (nothing run).

The planned bytes of the compiled training step (:func:`pclr_jax.benchmarking.memory.planned_bytes`)
grow linearly with the batch: parameters, optimizer state and code are fixed, activations and
their gradients are per ECG. :func:`largest_train_batch` compiles the step at two small batches,
fits that line, and takes the largest power of two of pairs that the line puts under ``margin``
x the available memory; it then compiles that batch to check it (halving while it does not
fit). Three or four compilations, no allocation of any batch.

Run in a process of its own (``benchmarks/accelerator_check.sh`` does), one JSON line out::

    python -m pclr_jax.benchmarking.fit --config full --dtype bf16 --dtype fp32
"""

from __future__ import annotations

import argparse
import json

from pclr_jax.benchmarking.memory import GIB, available_bytes, planned_bytes


def largest_train_batch(
    config,
    device,
    start_pairs: int = 32,
    max_pairs: int = 8192,
    margin: float = 0.9,
    limit_gib: float | None = None,
) -> dict:
    """The largest power-of-two pairs per step (``start_pairs`` <= pairs <= ``max_pairs``) whose
    compiled training step on ``device`` plans at most ``margin`` x the available memory (or
    ``limit_gib``). Returns ``pairs`` (0 if not even ``start_pairs`` fits), its ``planned_gib``,
    ``available_gib`` and the fitted line (``fixed_gib`` + ``per_pair_gib`` x pairs)."""
    from pclr_jax.benchmarking.workloads import compile_train_step

    def plan(pairs: int) -> int:
        return planned_bytes(compile_train_step(config, pairs, [device])[0])

    available = limit_gib * GIB if limit_gib else available_bytes(device)
    budget = margin * available
    small, large = plan(start_pairs), plan(2 * start_pairs)
    per_pair = max((large - small) / start_pairs, 1.0)
    fixed = small - per_pair * start_pairs
    pairs = start_pairs
    while 2 * pairs <= max_pairs and fixed + per_pair * 2 * pairs <= budget:
        pairs *= 2
    planned = {start_pairs: small, 2 * start_pairs: large}
    while pairs >= start_pairs:
        planned.setdefault(pairs, plan(pairs))
        if planned[pairs] <= budget:
            break
        pairs //= 2
    return {
        "pairs": pairs if pairs >= start_pairs else 0,
        "planned_gib": planned.get(pairs, 0) / GIB,
        "available_gib": available / GIB,
        "margin": margin,
        "fixed_gib": fixed / GIB,
        "per_pair_gib": per_pair / GIB,
    }


def main(argv: list[str] | None = None) -> None:
    from pclr_jax.benchmarking.workloads import encoder_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="full", choices=("full", "small", "tiny"))
    parser.add_argument("--dtype", action="append", choices=("fp32", "bf16"), required=True)
    parser.add_argument("--start-pairs", type=int, default=32)
    parser.add_argument("--max-pairs", type=int, default=8192)
    parser.add_argument("--margin", type=float, default=0.9)
    parser.add_argument("--memory-limit-gib", type=float, default=0.0)
    args = parser.parse_args(argv)
    import jax

    device = jax.devices()[0]
    results = {
        dtype: largest_train_batch(
            encoder_config(args.config, dtype=dtype),
            device,
            args.start_pairs,
            args.max_pairs,
            args.margin,
            args.memory_limit_gib or None,
        )
        for dtype in args.dtype
    }
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
