"""Bytes per step of the released-size step, measured vs modelled, and projected step times.

Two parts (``docs/scaling.md`` shows and explains their output):

``--compile``: compiles (does not run) the full-size training step (12 x 4096 input, 320-320 head,
NT-Xent, Adam, global batch norm) on ``--devices`` faked CPU devices with ``--pairs-per-device``
pairs each, parses the collectives of the compiled program with
:func:`pclr_jax.benchmarking.communication.collective_bytes` and compares them with
:func:`pclr_jax.benchmarking.communication.expected_bytes`; ``--out`` writes both as JSON. About
20-60 s and
4 GB.

Without ``--compile``: prints Markdown tables of projected step times from the analytic model and
the published accelerator and interconnect figures in :data:`PLATFORMS`, under the stated
assumptions (:data:`MFU`, :data:`FLOP_PER_ECG`, the latencies in :data:`PLATFORMS`). Instant.

Usage::

    python benchmarks/communication.py --compile --out benchmarks/results/communication_8dev.json
    python benchmarks/communication.py --pairs-per-device 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

# Training FLOPs per ECG (forward + backward) of the released model: a count of its products that
# XLA's cost analysis of the compiled step confirms within 0.5% (10.81 GFLOP, docs/benchmarks.md;
# forward 3.65 GFLOP, tests/test_bench.py), so backward is ~2/3 of the step's compute.
FLOP_PER_ECG = 10.86e9
FORWARD_FLOP_PER_ECG = 3.65e9
MFU = 0.40  # assumed fraction of peak bf16 throughput reached by the step's compute

# Published peak dense bf16 throughput (FLOP/s) and bandwidths (bytes/s, per direction, per
# accelerator); latencies are assumptions. 'near' is the bandwidth within a node or slice, 'far'
# across nodes (GPUs); ``node`` is the number of accelerators sharing 'near'.
PLATFORMS = {
    "H100 SXM (NVLink 4 / NDR IB)": dict(
        peak=989e12, near=450e9, far=50e9, node=8, near_latency=3e-6, far_latency=6e-6
    ),
    "A100 SXM (NVLink 3 / HDR IB)": dict(
        peak=312e12, near=300e9, far=25e9, node=8, near_latency=3e-6, far_latency=6e-6
    ),
    "TPU v4 (ICI)": dict(
        peak=275e12,
        near=1.1e15 / 4096,
        far=1.1e15 / 4096,
        node=4096,
        near_latency=2e-6,
        far_latency=2e-6,
    ),
    "TPU v5e (ICI)": dict(
        peak=197e12,
        near=51.2e12 / 256,
        far=51.2e12 / 256,
        node=256,
        near_latency=2e-6,
        far_latency=2e-6,
    ),
}


def compile_and_compare(devices: int, pairs_per_device: int, dtype: str) -> dict:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    )
    import time

    import jax

    from pclr_jax.benchmarking import communication
    from pclr_jax.model.encoder import EncoderConfig
    from pclr_jax.runtime.distributed import make_mesh

    config = EncoderConfig(dtype=dtype)
    mesh = make_mesh()
    pairs = pairs_per_device * mesh.size
    start = time.perf_counter()
    text = communication.compiled_step_hlo(config, mesh, pairs)
    seconds = time.perf_counter() - start
    measured = communication.collective_bytes(text)
    expected = communication.expected_bytes(config, pairs_per_device, mesh.size)
    print(communication.format_table(measured, expected))
    return {
        "devices": mesh.size,
        "pairs_per_device": pairs_per_device,
        "dtype": dtype,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "compile_s": round(seconds, 1),
        "measured": measured,
        "expected": expected,
        "collectives": [
            dict(
                kind=c.kind,
                operand_bytes=c.operand_bytes,
                result_bytes=c.result_bytes,
                executions=c.executions,
                op_name=c.op_name,
            )
            for c in communication.parse_collectives(text)
        ],
    }


def _all_reduce_time(size: float, n: int, bandwidth: float, latency: float) -> float:
    """Ring bandwidth term plus a log-depth (tree / torus) latency term."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * size / bandwidth + 2 * math.ceil(math.log2(n)) * latency


def _gather_time(size: float, n: int, bandwidth: float, latency: float) -> float:
    """All-gather of a ``size``-byte result, or reduce-scatter of a ``size``-byte operand."""
    if n == 1:
        return 0.0
    return (n - 1) / n * size / bandwidth + math.ceil(math.log2(n)) * latency


def project(platform: dict, n: int, pairs_per_device: int) -> dict:
    """Projected step time (seconds) of the released model, global batch norm, bf16 compute."""
    from pclr_jax.benchmarking import communication
    from pclr_jax.model.encoder import EncoderConfig

    config = EncoderConfig()
    far = n > platform["node"]
    bandwidth = platform["far"] if far else platform["near"]
    latency = platform["far_latency"] if far else platform["near_latency"]
    compute = 2 * pairs_per_device * FLOP_PER_ECG / (platform["peak"] * MFU)
    backward = compute * (1 - FORWARD_FLOP_PER_ECG / FLOP_PER_ECG)

    d = config.head_sizes[-1]
    gathered = 4 * 2 * pairs_per_device * n * d  # both views' float32 projections, gathered
    grads = 4 * communication.parameter_count(config)
    # On the critical path: per batch-norm layer one forward and one backward all-reduce (small,
    # latency-bound), the projection all-gathers and reduce-scatters (one per view), the loss.
    channels = communication.batch_norm_channels(config)
    critical = sum(_all_reduce_time(4 * 2 * c, n, bandwidth, latency) for c in channels)
    critical += sum(_all_reduce_time(4 * 2 * c, n, bandwidth, latency) for c in channels)
    critical += 4 * _gather_time(gathered / 2, n, bandwidth, latency)
    critical += _all_reduce_time(4, n, bandwidth, latency)
    gradient = _all_reduce_time(grads, n, bandwidth, latency)
    serial = compute + critical + gradient
    overlapped = compute + critical + max(0.0, gradient - backward)
    return dict(
        global_pairs=pairs_per_device * n,
        compute=compute,
        gradient=gradient,
        critical=critical,
        serial=serial,
        overlapped=overlapped,
        efficiency_serial=compute / serial,
        efficiency_overlapped=compute / overlapped,
    )


def projection_table(pairs_per_device: int, devices=(8, 64, 256)) -> str:
    rows = [
        f"Per device: {pairs_per_device} pairs ({2 * pairs_per_device} ECGs); times in ms.",
        "",
        "| platform | accelerators | global pairs | compute | gradient all-reduce "
        "| critical-path collectives | step, no overlap | step, overlapped "
        "| efficiency, no overlap | efficiency, overlapped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, platform in PLATFORMS.items():
        for n in devices:
            p = project(platform, n, pairs_per_device)
            rows.append(
                f"| {name} | {n} | {p['global_pairs']:,} | {1e3 * p['compute']:.2f} "
                f"| {1e3 * p['gradient']:.2f} | {1e3 * p['critical']:.2f} "
                f"| {1e3 * p['serial']:.2f} | {1e3 * p['overlapped']:.2f} "
                f"| {100 * p['efficiency_serial']:.0f}% | {100 * p['efficiency_overlapped']:.0f}% |"
            )
    return "\n".join(rows)


def batch_table(devices=(8, 64, 256), global_pairs=(256, 4096, 65536), dim=320) -> str:
    rows = [
        "| global pairs G | all-gathered projections per device (2 G d x 4 B) "
        "| full logits (2G)^2 x 4 B | "
        + " | ".join(f"local logits (2G/N) x 2G x 4 B, N={n}" for n in devices)
        + " |",
        "|---" * (3 + len(devices)) + "|",
    ]
    for g in global_pairs:
        cells = [f"{g:,}", _size(4 * 2 * g * dim), _size(4 * (2 * g) ** 2)]
        cells += [_size(4 * (2 * g // n) * 2 * g) for n in devices]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compile", action="store_true", help="compile and compare (slow)")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--pairs-per-device", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.compile:
        result = compile_and_compare(args.devices, args.pairs_per_device or 32, args.dtype)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        return 0
    print(projection_table(args.pairs_per_device or 64))
    print()
    print(batch_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
