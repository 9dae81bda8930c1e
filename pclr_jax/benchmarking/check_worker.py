"""One stage of the accelerator check on the device, in a process of its own: JSON lines out.

    python -m pclr_jax.benchmarking.check_worker STAGE [--tiny] [--dtype fp32|bf16 ...] [--seed N]

The orchestrator (:mod:`pclr_jax.benchmarking.accelerator_check`) starts one worker per stage,
so that it never holds device memory itself and a stage that dies takes nothing else with it.
A worker prints one JSON object per line as results arrive (``{"event": ..., ...}``), so that a
machine taken away mid-stage still leaves what was measured, and a last line ``{"event":
"done", "compiles": N, "compile_s": S, "cache_hits": H}`` (:mod:`compiles`). Every program of a
stage is compiled once and reused (the training steps compiled to find the largest batch are
the ones timed), and every input is generated on the device (:func:`random_on_device`).

Stages and their events:

* ``device``: ``device`` (platform, device kind and count, JAX version, ``memory_gib`` one device
  can allocate, XLA's fp32/bf16 matrix-product ``peaks`` in GFLOP/s).
* ``train``: per ``--dtype``, the training step at ``start_pairs`` (``row``), then the largest
  batch (``probe`` per compilation, ``largest``) and a ``row`` at it.
* ``embed``: per ``--dtype``, the embedding program on ``embed`` ECGs (``row``).
* ``conv_formulations``: per ``--dtype``, one ``timing`` per formulation and mode
  (:func:`pclr_jax.benchmarking.conv_choice.time_formulations`).

A ``row``: ``workload``, ``dtype``, ``pairs`` (train), ``ecgs`` per call, ``median_step_s``,
``ecg_per_s``, ``flops_per_ecg`` (analytic, :mod:`flops`), ``gflop_per_s``, ``first_call_s``,
``compile_s``, ``planned_gib`` (XLA's memory plan), ``device_peak_gib`` (None on CPU),
``finite`` (the step's loss, or every embedding, is finite).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

SIZES = {
    # preset, first train batch (pairs), largest pairs tried, embed batch, warm-up and timed
    # steps, matrix-product size of the peak, conv-formulation batch (ECGs) and rounds
    "full": dict(
        config="full",
        start_pairs=32,
        max_pairs=8192,
        embed=512,
        warmup=2,
        steps=10,
        peak=8192,
        conv_batch=256,
        conv_rounds=5,
    ),
    "tiny": dict(
        config="tiny",
        start_pairs=2,
        max_pairs=4,
        embed=8,
        warmup=1,
        steps=2,
        peak=128,
        conv_batch=4,
        conv_rounds=2,
    ),
}


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def timed_calls(call: Callable[[], object], warmup: int, steps: int) -> tuple[float, list[float]]:
    """``(first call s, [s of each of steps calls])``; every call blocks until done."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return first, times


def _row(workload: str, dtype: str, ecgs: int, flops_per_ecg: float, times, first, **extra):
    import jax

    from pclr_jax.benchmarking.memory import device_peak_mib

    median = statistics.median(times)
    peak = device_peak_mib(jax.devices()[:1])
    return {
        "workload": workload,
        "dtype": dtype,
        "ecgs": ecgs,
        "median_step_s": median,
        "ecg_per_s": ecgs / median,
        "flops_per_ecg": flops_per_ecg,
        "gflop_per_s": flops_per_ecg * ecgs / median / 1e9,
        "first_call_s": first,
        "device_peak_gib": None if peak is None else peak / 1024,
        **extra,
    }


def device_stage(sizes: dict) -> None:
    import jax

    from pclr_jax.benchmarking.memory import GIB, available_bytes
    from pclr_jax.benchmarking.peaks import DTYPES, device_facts, matmul_peak_gflops

    available = available_bytes(jax.devices()[0])
    peaks = {dtype: matmul_peak_gflops(dtype, sizes["peak"]) for dtype in DTYPES}
    memory = None if available is None else available / GIB
    emit("device", **device_facts(), memory_gib=memory, peaks=peaks)


def train_stage(sizes: dict, dtype: str, seed: int) -> None:
    """Row at ``start_pairs``, the largest batch (a probe per compilation), row at it."""
    import jax
    import numpy as np

    from pclr_jax.benchmarking.fit import largest_train_batch
    from pclr_jax.benchmarking.flops import train_flops_per_ecg
    from pclr_jax.benchmarking.memory import GIB, available_bytes, planned_bytes
    from pclr_jax.benchmarking.workloads import (
        compile_train_step,
        encoder_config,
        random_on_device,
    )

    config = encoder_config(sizes["config"], dtype=dtype)
    device = jax.devices()[0]
    flops = train_flops_per_ecg(config)
    programs: dict[int, dict] = {}

    def plan(pairs: int) -> int:
        if pairs not in programs:
            compiled, state, abstract, _, compile_s = compile_train_step(
                config, pairs, [device], seed
            )
            programs[pairs] = dict(
                compiled=compiled,
                state=state,
                abstract=abstract,
                compile_s=compile_s,
                planned=planned_bytes(compiled),
            )
        return programs[pairs]["planned"]

    def bench(pairs: int) -> None:
        program = programs[pairs]
        compiled, holder = program["compiled"], {"state": program.pop("state")}
        batch = random_on_device(program["abstract"], seed)

        def step():
            holder["state"], metrics = compiled(holder["state"], batch)
            return metrics

        first, times = timed_calls(step, sizes["warmup"], sizes["steps"])
        finite = bool(np.isfinite(float(jax.device_get(step()["loss"]))))
        row = _row("train", dtype, 2 * pairs, flops, times, first, pairs=pairs)
        planned = program["planned"] / GIB
        emit("row", **row, compile_s=program["compile_s"], planned_gib=planned, finite=finite)

    available = available_bytes(device) or float("inf")
    start = sizes["start_pairs"]
    if plan(start) <= 0.9 * available:
        bench(start)
    fit = largest_train_batch(
        plan,
        available,
        start,
        sizes["max_pairs"],
        on_probe=lambda probe: emit("probe", dtype=dtype, **probe),
    )
    emit("largest", dtype=dtype, **fit)
    if fit["pairs"] and fit["pairs"] != start:
        for pairs, program in programs.items():
            if pairs != fit["pairs"]:
                program.pop("state", None)  # the other probes' states, before the step's
        bench(fit["pairs"])


def embed_stage(sizes: dict, dtype: str, seed: int) -> None:
    import jax
    import numpy as np

    from pclr_jax.benchmarking.flops import forward_flops_per_ecg
    from pclr_jax.benchmarking.memory import GIB, planned_bytes
    from pclr_jax.benchmarking.workloads import compile_embed, encoder_config, random_on_device

    config = encoder_config(sizes["config"], dtype=dtype)
    start = time.perf_counter()
    _, forward, compiled, abstract, _ = compile_embed(config, sizes["embed"], jax.devices()[:1])
    compile_s = time.perf_counter() - start
    ecgs = random_on_device(abstract, seed, scale=0.5)
    first, times = timed_calls(lambda: forward(ecgs), sizes["warmup"], sizes["steps"])
    finite = bool(np.isfinite(np.asarray(forward(ecgs))).all())
    flops = forward_flops_per_ecg(config, with_head=False)
    row = _row("embed", dtype, abstract.shape[0], flops, times, first)
    planned = planned_bytes(compiled) / GIB
    emit("row", **row, compile_s=compile_s, planned_gib=planned, finite=finite, inputs="device")


def conv_formulations_stage(sizes: dict, dtype: str, seed: int) -> None:
    from pclr_jax.benchmarking.conv_choice import time_formulations
    from pclr_jax.benchmarking.workloads import encoder_config

    config = encoder_config(sizes["config"])
    for row in time_formulations(config, dtype, sizes["conv_batch"], sizes["conv_rounds"], seed):
        emit("timing", **row)


STAGES = {
    "device": device_stage,  # no dtype
    "train": train_stage,
    "embed": embed_stage,
    "conv_formulations": conv_formulations_stage,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--tiny", action="store_true", help="test sizes (any backend)")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), action="append", help="repeat for several"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pclr_jax.benchmarking.compiles import CompileCounter

    counter = CompileCounter()
    sizes = SIZES["tiny" if args.tiny else "full"]
    if args.stage == "device":
        device_stage(sizes)
    else:
        for dtype in args.dtype or ["fp32"]:
            STAGES[args.stage](sizes, dtype, args.seed)
    emit("done", **counter.totals())


if __name__ == "__main__":
    main()
