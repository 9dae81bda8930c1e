"""Training-step throughput of the full PCLR model (12 x 4096 input, 320-d head) with NT-Xent.

For each precision (float32, bfloat16 compute) and global batch (32 and 128 pairs) it builds the
real ``make_train_step`` on all local devices (1 on a plain CPU host), measures the first call
(trace + compile + one step) and then the median of ``--steps`` timed steps after ``--warmup``
untimed ones, on random inputs (the step's cost does not depend on the values).

ECG/s counts ECGs, not pairs: one ECG is ONE of the two views, so a step on ``B`` pairs processes
``2B`` ECGs (each through the forward and backward pass). Prints a table and writes JSON.

    python benchmarks/train_step.py --out benchmarks/results/train_step.json

Name the machine, and whether other jobs shared it, when quoting the numbers.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.distributed import make_mesh
from pclr_jax.losses import get_loss
from pclr_jax.model import EncoderConfig
from pclr_jax.optimizers import make_optimizer
from pclr_jax.train_state import create_train_state
from pclr_jax.train_step import make_train_step


def _optimizer(pairs: int):
    cfg = ml_collections.ConfigDict(
        dict(
            name="adam",
            learning_rate=1e-3,
            lr_scaling="none",
            base_batch_pairs=256,
            warmup_steps=0,
            schedule="constant",
            weight_decay=0.0,
            grad_clip_norm=1.0,
            b1=0.9,
            b2=0.999,
            eps=1e-7,
        )
    )
    return make_optimizer(cfg, pairs, total_steps=1000)[0]


def measure(dtype: str, pairs: int, warmup: int, steps: int) -> dict:
    """Compile time and step times of one configuration."""
    config = EncoderConfig(dtype=dtype)
    mesh = make_mesh()
    if pairs % mesh.size:
        raise ValueError(f"{pairs} pairs do not divide over {mesh.size} devices")
    optimizer = _optimizer(pairs)
    state = create_train_state(config, get_loss("ntxent"), optimizer, jax.random.key(0), mesh)
    step = make_train_step(config, "ntxent", {"temperature": 0.1}, optimizer, mesh)
    rng = np.random.default_rng(0)
    shape = (pairs, config.n_samples, config.n_leads)
    batch = jax.device_put(
        {
            "view_a": rng.normal(size=shape).astype(np.float32),
            "view_b": rng.normal(size=shape).astype(np.float32),
            "patient_id": np.arange(pairs, dtype=np.int32),
        },
        NamedSharding(mesh, P("data")),
    )
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    first_call = time.perf_counter() - start
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "dtype": dtype,
        "pairs": pairs,
        "ecgs_per_step": 2 * pairs,
        "devices": mesh.size,
        "first_call_s": first_call,
        "compile_s": first_call - median,
        "step_times_s": times,
        "median_step_s": median,
        "ecg_per_s": 2 * pairs / median,
        "loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--machine", default=platform.processor() or platform.machine())
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()

    rows = []
    for dtype in args.dtypes:
        for pairs in args.pairs:
            row = measure(dtype, pairs, args.warmup, args.steps)
            rows.append(row)
            print(
                f"{dtype:>9} {pairs:>5} pairs: {row['ecg_per_s']:7.1f} ECG/s, median step "
                f"{row['median_step_s']:.3f} s, compile {row['compile_s']:.1f} s",
                flush=True,
            )

    print()
    print("| dtype | pairs | ECGs/step | ECG/s | median step (s) | compile (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['pairs']} | {r['ecgs_per_step']} | {r['ecg_per_s']:.1f} | "
            f"{r['median_step_s']:.3f} | {r['compile_s']:.1f} |"
        )
    result = {
        "benchmark": "train_step",
        "model": "PCLR 12 x 4096, head (320, 320), NT-Xent t=0.1, Adam",
        "ecg_definition": "one ECG = one of the two views; a step on B pairs processes 2B ECGs",
        "machine": args.machine,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "rows": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
