"""Input stalls of the training loop: the step fed three ways, timed side by side.

A small model (``--model``: configs/smoke.py's encoder at 256 samples, a narrower one, or a very
narrow encoder at the released 4,096 samples), trained on an ArrayRecord file of random float16
ECGs (``loader_throughput.write_split``: the fastest host format; tfds-prepared splits read
slower). Every round runs ``--steps`` steps in each mode, in turn, on one train state:

* ``before``: the loop as it was: read the host batch (float32), place it, run the step, fetch
  the metrics (``jax.device_get``) before reading the next batch;
* ``host``: ``config.loader.mode='host'``: :class:`DevicePrefetcher` (float16 views, cast on
  the devices) and every step's metrics fetched one step late (as measured below; the training
  loop now reads them only every ``log_every_steps``, which can only shorten the stall);
* ``device_resident``: the split in device memory, pairs gathered there, metrics one step late.

Reported per mode (median over rounds): wall time per step, ECG/s and the input-stall fraction
(time spent waiting for the next batch / wall time; for ``before`` the whole host batch
preparation is waiting). ``--feed-only`` times the feeds alone (batches on the devices per
second, no training; the stall column is then meaningless).

Run: ``python benchmarks/input_stall.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import tempfile
import time

import jax
import numpy as np
from loader_throughput import cpu_name, write_split

from pclr_jax.data.device_prefetch import DevicePrefetcher
from pclr_jax.data.device_resident import DeviceResidentPairLoader
from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch
from pclr_jax.losses import get_loss
from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.step.optimizers import fixed_adam_config, make_optimizer
from pclr_jax.step.train_state import create_train_state
from pclr_jax.step.train_step import make_train_step
from pclr_jax.training.step_metrics import InputStallMeter

MODELS = {
    # configs/smoke.py's encoder.
    "smoke": EncoderConfig(
        n_samples=256,
        stem_filters=8,
        unit_samples=(64, 16, 8, 4),
        unit_filters=(16, 16, 24, 32),
        kernel_size=5,
        head_sizes=(32, 32),
    ),
    # The narrowest encoder of that shape: a step about as fast as a CPU can train.
    "minimal": EncoderConfig(
        n_samples=256,
        stem_filters=4,
        unit_samples=(64, 16, 8, 4),
        unit_filters=(4, 4, 4, 4),
        kernel_size=3,
        head_sizes=(8, 8),
    ),
    # The released input size with a very narrow encoder.
    "narrow_4096": EncoderConfig(
        n_samples=4096,
        stem_filters=4,
        unit_samples=(1024, 256, 64, 16),
        unit_filters=(4, 4, 8, 8),
        kernel_size=3,
        head_sizes=(16, 16),
    ),
}


def run_before(state, step_fn, loader, mesh, steps):
    """The old loop body: synchronous host batch, step, metrics fetched every step."""
    wait, start = 0.0, time.perf_counter()
    for _ in range(steps):
        tick = time.perf_counter()
        batch = to_global_batch(next(loader), mesh)
        wait += time.perf_counter() - tick
        state, metrics = step_fn(state, batch)
        jax.device_get(metrics)
    elapsed = time.perf_counter() - start
    return state, elapsed / steps, wait / elapsed


def run_late(state, step_fn, feed, steps):
    """Batches from ``feed``, each step's metrics fetched once the next step is dispatched."""
    meter, previous = InputStallMeter(), None
    for _ in range(steps):
        state, metrics = step_fn(state, meter.next_batch(feed))
        if previous is not None:
            jax.device_get(previous)
        previous = metrics
    jax.device_get(previous)
    meter.count_steps(steps)
    window = meter.window(1)
    return state, window["step_time_s"], window["input_stall_fraction"]


def feed_rate(feed, steps: int, mesh=None) -> float:
    """Global batches per second the feed alone delivers onto the devices (no training)."""
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(feed)
        if mesh is not None:  # the old path: a host batch, placed synchronously
            batch = to_global_batch(batch, mesh)
        jax.block_until_ready(batch)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1024)
    parser.add_argument("--batch-pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-threads", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="smoke")
    parser.add_argument(
        "--feed-only", action="store_true", help="time the feeds alone, without training"
    )
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    mesh = make_mesh()
    optimizer, _ = make_optimizer(fixed_adam_config(), args.batch_pairs, 1000)
    loss = get_loss("ntxent", axis_name="data", temperature=0.1)
    model = MODELS[args.model]
    state = create_train_state(model, loss, optimizer, jax.random.key(0), mesh)
    step_fn = make_train_step(model, get_loss("ntxent", temperature=0.1), optimizer, mesh)
    times: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shape = (model.n_samples, 12)
        split = write_split(pathlib.Path(tmp), args.records, "group_size:1", shape=shape)

        def loader(views_dtype):
            config = PairLoaderConfig(
                batch_pairs=args.batch_pairs,
                read_threads=args.read_threads,
                views_dtype=views_dtype,
            )
            return make_pair_loader(split, config, 0, 1)

        feeds = {
            "before": loader("float32"),
            "host": DevicePrefetcher(
                loader("float16"), functools.partial(to_global_batch, mesh=mesh)
            ),
            "device_resident": DeviceResidentPairLoader(
                split, PairLoaderConfig(batch_pairs=args.batch_pairs), mesh
            ),
        }
        for mode, feed in feeds.items():  # compile and warm every path
            if args.feed_only:
                feed_rate(feed, 2, mesh if mode == "before" else None)
            elif mode == "before":
                state, _, _ = run_before(state, step_fn, feed, mesh, 2)
            else:
                state, _, _ = run_late(state, step_fn, feed, 2)
        for _ in range(args.rounds):
            for mode, feed in feeds.items():
                if args.feed_only:
                    rate = feed_rate(feed, args.steps, mesh if mode == "before" else None)
                    step_time, stall = 1 / rate, 1.0
                elif mode == "before":
                    state, step_time, stall = run_before(state, step_fn, feed, mesh, args.steps)
                else:
                    state, step_time, stall = run_late(state, step_fn, feed, args.steps)
                times.setdefault(mode, []).append((step_time, stall))
        for feed in feeds.values():
            feed.close()
    load_after = os.getloadavg()[0]
    ecgs = 2 * args.batch_pairs
    print(f"load average after: {load_after:.1f}; {ecgs} ECGs ({model.n_samples} x 12) per step")
    rows = []
    for mode, values in times.items():
        step_time, stall = np.median(np.array(values), axis=0)
        rows.append(
            {
                "mode": mode,
                "step_time_s": float(step_time),
                "ecg_per_s": float(ecgs / step_time),
                "input_stall_fraction": float(stall),
                "rounds": [list(v) for v in values],
            }
        )
        print(
            f"  {mode:<16} {step_time * 1e3:8.1f} ms/step  {ecgs / step_time:7.0f} ECG/s  "
            f"stall {stall:5.1%}"
        )
    if args.json:
        machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_after": load_after}
        args.json.write_text(
            json.dumps(
                {"machine": machine, "args": vars(args) | {"json": None}, "rows": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
