"""Where a training step's time goes on XLA:CPU: per-operation times from the JAX profiler.

Compiles ``pclr bench train``'s step (:func:`pclr_jax.benchmarking.workloads.compile_train_step`,
released size, 32 pairs) with ``--conv-impl``, runs ``--steps`` steps under
``jax.profiler.trace`` after two untimed ones, and reads the trace back
(``jax.profiler.ProfileData``): the executor's operations (XLA's fusions, its convolutions, the
oneDNN custom calls ``ffi_call.*``), ms per step by kind and the heaviest ones, and how much of
the wall time they cover once overlaps are merged (XLA:CPU may run independent operations
concurrently)::

    PYTHONPATH=. python benchmarks/step_profile.py --conv-impl onednn --json out.json

Name the machine and its load when quoting (``--json`` records them). Tracing adds a little
time per operation; compare kinds within one run. XLA:CPU's own convolutions carry no trace
event (JAX 0.10.2): in a program without custom calls the time not covered is mostly theirs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import tempfile
import time

import jax

from pclr_jax.benchmarking import workloads
from pclr_jax.model import conv

_EXECUTOR_LINES = ("XLAEigen", "PjRtCpuClient")


def _covered_ns(intervals: list[tuple[int, int]]) -> int:
    """Total length of the union of ``(start, end)`` intervals."""
    total, end = 0, None
    for lo, hi in sorted(intervals):
        if end is None or lo > end:
            total, end = total + hi - lo, hi
        elif hi > end:
            total, end = total + hi - end, hi
    return total


def operations(trace_dir: str) -> list[tuple[int, int, str]]:
    """``(start_ns, end_ns, name)`` of every operation the CPU executor ran in the trace."""
    path = next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
    events = []
    for plane in jax.profiler.ProfileData.from_file(str(path)).planes:
        for line in plane.lines:
            if not any(key in line.name for key in _EXECUTOR_LINES):
                continue
            for event in line.events:
                name = event.name
                if name.startswith(("ThunkExecutor", "end: ")):
                    continue
                events.append((event.start_ns, event.start_ns + event.duration_ns, name))
    return events


def kind(name: str) -> str:
    """An operation's kind: ``ffi_call.72`` -> ``ffi_call``, ``add_fusion.7`` -> ``add_fusion``."""
    return name.split(".")[0]


def profile(conv_impl: str, pairs: int, steps: int) -> dict:
    config = workloads.encoder_config("full", None, "fp32").replace(conv_impl=conv_impl)
    compiled, state, abstract, _, _ = workloads.compile_train_step(config, pairs, jax.devices()[:1])
    batch = workloads.random_on_device(abstract)
    for _ in range(2):
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
        wall_ms = 1e3 * (time.perf_counter() - start) / steps
        events = operations(trace_dir)
    per_step = 1e-6 / steps
    by_kind, by_name = collections.Counter(), collections.Counter()
    for lo, hi, name in events:
        by_kind[kind(name)] += (hi - lo) * per_step
        by_name[name] += (hi - lo) * per_step
    custom = [(lo, hi) for lo, hi, name in events if kind(name) == "ffi_call"]
    other = [(lo, hi) for lo, hi, name in events if kind(name) != "ffi_call"]
    return {
        "conv_impl": conv.resolve_impl(conv_impl, dtype="float32"),
        "pairs": pairs,
        "steps": steps,
        "wall_ms_per_step": wall_ms,
        "covered_ms_per_step": _covered_ns([(lo, hi) for lo, hi, _ in events]) * per_step,
        "custom_calls_covered_ms": _covered_ns(custom) * per_step,
        "other_covered_ms": _covered_ns(other) * per_step,
        "ms_by_kind": dict(by_kind.most_common()),
        "heaviest_ms": dict(by_name.most_common(25)),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conv-impl", default="auto", choices=conv.CONV_IMPLS)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    result = profile(args.conv_impl, args.pairs, args.steps)
    result["load_average"] = [load_before, os.getloadavg()]
    print(
        f"conv_impl {result['conv_impl']}: {result['wall_ms_per_step']:.0f} ms per step; "
        f"operations cover {result['covered_ms_per_step']:.0f} ms (oneDNN custom calls "
        f"{result['custom_calls_covered_ms']:.0f}, everything else "
        f"{result['other_covered_ms']:.0f}, overlaps merged; XLA's convolutions are not traced)"
    )
    for name, ms in list(result["ms_by_kind"].items())[:15]:
        print(f"{ms:9.1f} ms  {name}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
