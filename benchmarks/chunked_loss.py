"""Chunked vs dense contrastive loss: time and peak memory of loss + gradient at huge batches.

Each configuration runs in a fresh subprocess on one CPU device: random float32 projections,
``embeddings`` rows in all (``embeddings / 2`` pairs, view a and view b; ``dim`` 320 by default),
the jitted ``value_and_grad`` of the loss with respect to both views, compiled ahead of time, then
run once.
Reported per configuration:

- ``planned``: XLA's temporary buffer bytes for the compiled program (``memory_analysis()``),
  available without running it, so it also shows what the dense loss WOULD need where it cannot run;
- ``B^2 fp32``: the size of one dense ``(embeddings, embeddings)`` float32 similarity matrix;
- ``peak RSS``: the process' high-water mark (``ru_maxrss``) after the run, and its baseline just
  before it (inputs allocated, program compiled);
- compile and run time (wall clock, one run, after compilation).

Configurations whose planned memory exceeds ``--max-run-gib`` are compiled but not run.

Usage::

    python benchmarks/chunked_loss.py                      # the default sweep, a few minutes
    python benchmarks/chunked_loss.py --sizes 8192 --dense-sizes 8192 --chunk-size 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

GIB = 2**30


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def worker(args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process; returns the measurements."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pclr_jax.losses import get_loss

    pairs = args.embeddings // 2
    rng = np.random.default_rng(0)
    z_a = jnp.asarray(rng.normal(size=(pairs, args.dim)), jnp.float32)
    z_b = jnp.asarray(rng.normal(size=(pairs, args.dim)), jnp.float32) * 0.5 + z_a
    ids = jnp.arange(pairs, dtype=jnp.int32)
    hparams = {"chunk_size": args.chunk_size}  # 0: dense at any size
    loss_fn = get_loss(args.loss, **hparams)
    params = loss_fn.init_params()
    value_and_grad = jax.jit(
        jax.value_and_grad(lambda a, b: loss_fn(a, b, ids, params)[0], argnums=(0, 1))
    )
    start = time.perf_counter()
    compiled = value_and_grad.lower(z_a, z_b).compile()
    compile_s = time.perf_counter() - start
    planned = compiled.memory_analysis().temp_size_in_bytes / GIB
    result = {
        "loss": args.loss,
        "embeddings": args.embeddings,
        "pairs": pairs,
        "dim": args.dim,
        "chunk_size": args.chunk_size if args.chunk_size > 0 else None,
        "planned_gib": planned,
        "dense_matrix_gib": args.embeddings**2 * 4 / GIB,
        "compile_s": compile_s,
        "ran": False,
    }
    if planned > args.max_run_gib:
        return result
    baseline = _rss_gib()
    start = time.perf_counter()
    loss, grads = jax.block_until_ready(compiled(z_a, z_b))
    result.update(
        ran=True,
        run_s=time.perf_counter() - start,
        baseline_rss_gib=baseline,
        peak_rss_gib=_rss_gib(),
        value=float(loss),
        finite=bool(np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in grads)),
    )
    return result


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, one XLA CPU device"


def _run_config(args: argparse.Namespace, embeddings: int, chunk_size: int | None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        f"--loss={args.loss}",
        f"--dim={args.dim}",
        f"--embeddings={embeddings}",
        f"--max-run-gib={args.max_run_gib}",
        f"--chunk-size={chunk_size or 0}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    chunk = r["chunk_size"] or "dense"
    head = (
        f"| {r['embeddings']:>6} | {r['pairs']:>6} | {chunk:>5} | {r['dense_matrix_gib']:7.2f} "
        f"| {r['planned_gib']:7.2f} |"
    )
    if not r["ran"]:
        return head + " not run (planned > limit) | | | |"
    return head + (
        f" {r['baseline_rss_gib']:5.2f} -> {r['peak_rss_gib']:5.2f} | {r['compile_s']:5.1f} "
        f"| {r['run_s']:6.1f} | {r['value']:.6f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", default="ntxent")
    parser.add_argument("--dim", type=int, default=320)
    parser.add_argument("--chunk-size", type=int, default=1024, help="columns per block")
    parser.add_argument(
        "--sizes", default="8192,16384,65536", help="embeddings (2 x pairs), chunked runs"
    )
    parser.add_argument(
        "--dense-sizes", default="8192,16384,32768,65536", help="embeddings, dense (unchunked)"
    )
    parser.add_argument("--max-run-gib", type=float, default=6.0, help="run only below this plan")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--embeddings", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    sizes = sorted(
        {(int(s), args.chunk_size) for s in args.sizes.split(",") if s}
        | {(int(s), None) for s in args.dense_sizes.split(",") if s},
        key=lambda sc: (sc[0], sc[1] or 0),
    )
    print(f"# {args.loss} loss + gradient, dim {args.dim}; {_machine()}")
    print(
        "| embeddings | pairs | chunk | B^2 fp32 GiB | planned GiB | RSS GiB before -> peak "
        "| compile s | run s | loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for embeddings, chunk_size in sizes:
        result = _run_config(args, embeddings, chunk_size)
        results.append(result)
        print(_row(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": _machine(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
