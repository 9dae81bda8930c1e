"""The largest training batch that fits on one device, from XLA's memory plan (nothing run).

The planned bytes of the compiled training step (:func:`pclr_jax.benchmarking.memory.planned_bytes`)
grow linearly with the batch: parameters, optimizer state and code are fixed, activations and
their gradients are per ECG. So ``plan(start) / start`` bytes per pair is an upper bound of the
per-pair slope, and the largest power of two of pairs ``G`` under ``budget / (plan(start) /
start)`` fits for sure (on the line; ``budget`` = ``margin`` x the available memory).
:func:`largest_train_batch` compiles ``start`` and ``G``, fits the line through them, and
compiles the largest power of two the line puts under the budget, if above ``G``, halving while
it does not fit. Two or three compilations per dtype; no batch is allocated. Every compilation is
reported as it happens (``on_probe``), and a caller that benchmarks the same batches passes a
``plan`` that keeps the compiled programs (the accelerator check does), so none is compiled twice.

Run in a process of its own, one JSON line per probe and a last line with the results::

    python -m pclr_jax.benchmarking.fit --config full --dtype bf16 --dtype fp32
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from pclr_jax.benchmarking.memory import GIB, available_bytes, planned_bytes


def _power_of_two_at_most(value: float) -> int:
    return 1 << max(0, int(value).bit_length() - 1) if value >= 1 else 0


def largest_train_batch(
    plan: Callable[[int], int],
    available: float,
    start_pairs: int = 32,
    max_pairs: int = 8192,
    margin: float = 0.9,
    on_probe: Callable[[dict], None] = lambda probe: None,
) -> dict:
    """The largest power-of-two pairs per step (``start_pairs`` <= pairs <= ``max_pairs``) whose
    planned bytes ``plan(pairs)`` (a compilation) are at most ``margin`` x ``available`` bytes.

    ``on_probe`` gets ``{"pairs", "planned_gib", "fits"}`` after every compilation. Returns
    ``pairs`` (0 if not even ``start_pairs`` fits), its ``planned_gib``, ``available_gib``,
    ``margin``, the fitted line (``fixed_gib`` + ``per_pair_gib`` x pairs) and ``probes``, the
    pairs compiled in order.
    """
    budget = margin * available
    planned: dict[int, int] = {}

    def probe(pairs: int) -> bool:
        planned[pairs] = plan(pairs)
        fits = planned[pairs] <= budget
        on_probe({"pairs": pairs, "planned_gib": planned[pairs] / GIB, "fits": fits})
        return fits

    pairs, fixed, per_pair = 0, 0.0, 0.0
    if probe(start_pairs):
        pairs, per_pair = start_pairs, planned[start_pairs] / start_pairs
        guess = _power_of_two_at_most(budget / per_pair)  # fits if the plan is linear
        second = min(max(guess, 2 * start_pairs), max_pairs)
        if second > start_pairs:
            if probe(second):
                pairs = second
            per_pair = (planned[second] - planned[start_pairs]) / (second - start_pairs)
            fixed = planned[start_pairs] - per_pair * start_pairs
            line = _power_of_two_at_most((budget - fixed) / per_pair) if per_pair > 0 else 0
            target = min(line, max_pairs) if per_pair > 0 else max_pairs
            while target > pairs:
                if target not in planned and probe(target):
                    pairs = target
                    break
                target //= 2
    return {
        "pairs": pairs,
        "planned_gib": planned.get(pairs, 0) / GIB,
        "available_gib": available / GIB,
        "margin": margin,
        "fixed_gib": fixed / GIB,
        "per_pair_gib": per_pair / GIB,
        "probes": list(planned),
    }


def main(argv: list[str] | None = None) -> None:
    from pclr_jax.benchmarking.workloads import compile_train_step, encoder_config

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
    available = args.memory_limit_gib * GIB if args.memory_limit_gib else available_bytes(device)
    results = {}
    for dtype in args.dtype:
        config = encoder_config(args.config, dtype=dtype)

        def plan(pairs: int, config=config) -> int:
            return planned_bytes(compile_train_step(config, pairs, [device])[0])

        def report(probe: dict, dtype=dtype) -> None:
            print(json.dumps({"event": "probe", "dtype": dtype, **probe}), flush=True)

        results[dtype] = largest_train_batch(
            plan, available, args.start_pairs, args.max_pairs, args.margin, report
        )
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
