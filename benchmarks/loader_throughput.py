"""Patient-pair loader throughput (ECG/s) over an ArrayRecord file of (4096, 12) float16 ECGs.

Writes ``--records`` random float16 ECGs (1-4 per patient) to an ArrayRecord file in a temporary
directory (``--writer-options``: default ``group_size:1`` with ArrayRecord's default compression,
as tensorflow-datasets writes; ``group_size:1,uncompressed`` reads about 3x faster), then
measures, side by side:

* ``source loop``: ``source[i]`` over a shuffled order, decoded to float32 (the reading floor);
* ``pairs``: :func:`pclr_jax.data.loader.make_pair_loader` without augmentation;
* ``pairs + augment``: with every augmentation at probability 0.5;
* the same with grain's knobs: read threads (``--read-threads``), host prefetch buffer
  (``--prefetch``), worker processes (``--workers``), and float16 views (``views_dtype``, what
  the training loop sends to the devices);
* with ``--tfds``, all of it again on the train split of ``pclr_synthetic/small`` prepared by
  the tensorflow-datasets builder (tf.Example records: what ``pclr prepare`` writes).

ECG/s counts both views of every pair. Besides wall-clock ECG/s, each setting reports ECGs per
CPU-second (the process and its grain workers, from ``psutil``): the per-core rate, which a shared
machine's load disturbs far less than the wall-clock rate, and the input bytes per second (stored
float16, 98,304 B per 4,096 x 12 ECG). ``--repeats`` runs every setting that many times,
interleaved (setting 1, 2, ..., then again), and reports medians.

Run: ``python benchmarks/loader_throughput.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time
from types import SimpleNamespace

import grain
import numpy as np
import pandas as pd
import psutil
from array_record.python.array_record_module import ArrayRecordWriter

from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader

SHAPE = (4096, 12)
AUGMENT_ALL = {
    name: {"probability": 0.5}
    for name in ("time_warp", "amplitude_scale", "gaussian_noise", "random_crop", "drop_leads")
}


class RawECGSource:
    """Random access to an ArrayRecord file whose records are raw float16 ``SHAPE`` ECG bytes."""

    def __init__(self, path: str, record_ids: np.ndarray, shape: tuple[int, int] = SHAPE):
        self._records = grain.sources.ArrayRecordDataSource(path)
        self._record_ids = record_ids
        self._shape = shape

    def __len__(self) -> int:
        return len(self._records)

    def _decode(self, key: int, record: bytes) -> dict:
        ecg = np.frombuffer(record, np.float16).reshape(self._shape)
        return {"ecg": ecg, "record_id": self._record_ids[key]}

    def __getitem__(self, key: int) -> dict:
        return self._decode(key, self._records[key])


def write_split(
    directory: pathlib.Path,
    n_records: int,
    writer_options: str = "group_size:1",
    seed: int = 0,
    shape: tuple[int, int] = SHAPE,
) -> SimpleNamespace:
    """Writes ``n_records`` ``shape`` ECGs; returns a prepared-split-like object over them."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 5, size=n_records)
    patients = np.repeat(np.arange(n_records), per_patient)[:n_records]
    index = pd.DataFrame(
        {"record_id": [f"r{i:06d}" for i in range(n_records)], "patient_id": patients.astype(str)}
    )
    path = str(directory / "ecgs.array_record")
    writer = ArrayRecordWriter(path, writer_options)
    for start in range(0, n_records, 256):
        chunk = rng.standard_normal((min(256, n_records - start), *shape), np.float32)
        for ecg in chunk.astype(np.float16):
            writer.write(ecg.tobytes())
    writer.close()
    record_ids = index["record_id"].to_numpy()
    return SimpleNamespace(source=RawECGSource(path, record_ids, shape), index=index)


def source_loop_rate(split: SimpleNamespace, n: int) -> float:
    order = np.random.default_rng(1).permutation(len(split.source))[:n]
    start = time.perf_counter()
    for i in order:
        split.source[int(i)]["ecg"].astype(np.float32)
    return n / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (grain workers)."""
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def loader_rate(
    split: SimpleNamespace, config: PairLoaderConfig, batches: int
) -> tuple[float, float]:
    """(ECG/s wall clock, ECGs per CPU-second) over ``batches`` batches after a warm-up one."""
    loader = make_pair_loader(split, config, 0, 1)
    try:
        next(loader)  # start-up (worker processes, first epoch's order)
        cpu, start = cpu_seconds(), time.perf_counter()
        for _ in range(batches):
            batch = next(loader)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        assert batch["view_a"].dtype == np.dtype(config.views_dtype)
    finally:
        loader.close()
    ecgs = 2 * config.batch_pairs * batches
    return ecgs / elapsed, ecgs / cpu


def cpu_name() -> str:
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def settings(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Every loader setting measured: name -> PairLoaderConfig keyword arguments. Augmentation
    is measured at each read-thread count; the other knobs without it."""
    rows = []
    for threads in args.read_threads:
        rows.append((f"pairs, threads={threads}", dict(read_threads=threads)))
        rows.append(
            (
                f"pairs + augment, threads={threads}",
                dict(read_threads=threads, augmentations=AUGMENT_ALL),
            )
        )
    rows += [(f"pairs, threads=2, prefetch={p}", dict(prefetch_batches=p)) for p in args.prefetch]
    rows += [("pairs, threads=2, float16 views", dict(views_dtype="float16"))]
    rows += [(f"pairs, workers={w}", dict(worker_count=w)) for w in args.workers]
    return rows


def measure(split: SimpleNamespace, args: argparse.Namespace) -> list[dict]:
    """The source loop, then the loader in every setting (``--repeats`` interleaved rounds)."""
    source_loop_rate(split, 512)  # warm the page cache
    ecg_bytes = int(np.prod(split.source[0]["ecg"].shape)) * 2  # stored float16
    runs: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        runs.setdefault("source loop (shuffled, to float32)", []).append(
            (source_loop_rate(split, 1024), float("nan"))
        )
        for name, options in settings(args):
            config = PairLoaderConfig(batch_pairs=args.batch_pairs, seed=0, **options)
            runs.setdefault(name, []).append(loader_rate(split, config, args.batches))
            print(
                f"  {name}: {runs[name][-1][0]:.0f} ECG/s, {runs[name][-1][1]:.0f} per CPU-s",
                flush=True,
            )
    rows = []
    for name, rates in runs.items():
        wall, per_cpu = np.median(np.array(rates), axis=0)
        rows.append(
            {
                "setting": name,
                "ecg_per_s": float(wall),
                "ecg_per_cpu_s": float(per_cpu),
                "mb_per_s": float(wall * ecg_bytes / 1e6),
                "mb_per_cpu_s": float(per_cpu * ecg_bytes / 1e6),
            }
        )
    return rows


def prepare_synthetic(directory: pathlib.Path) -> SimpleNamespace:
    """``pclr_synthetic/small``'s train split through the tfds builder (tf.Example records)."""
    from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic
    from pclr_jax.data.prepared import load_prepared

    PclrSynthetic(config="small", data_dir=str(directory)).download_and_prepare()
    return load_prepared("pclr_synthetic", "train", directory, config="small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4096)
    parser.add_argument("--batch-pairs", type=int, default=128)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--read-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prefetch", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=pathlib.Path, help="also write the tables here")
    parser.add_argument("--writer-options", default="group_size:1")
    parser.add_argument(
        "--tfds", action="store_true", help="also measure a prepared pclr_synthetic/small split"
    )
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        split = write_split(pathlib.Path(tmp), args.records, args.writer_options)
        size = sum(f.stat().st_size for f in pathlib.Path(tmp).iterdir()) / 2**20
        print(
            f"wrote {args.records} ECGs {SHAPE} float16 ({size:.0f} MiB, "
            f"{args.writer_options!r}) in {time.perf_counter() - start:.1f} s"
        )
        tables[f"raw ArrayRecord, {args.records} ECGs"] = measure(split, args)
        if args.tfds:
            prepared = prepare_synthetic(pathlib.Path(tmp) / "tfds")
            tables[f"tfds pclr_synthetic/small train, {len(prepared.index)} ECGs"] = measure(
                prepared, args
            )
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.1f} (other jobs share these cores)")
    for title, rows in tables.items():
        print(f"\n{title} (median of {args.repeats} interleaved rounds)")
        width = max(len(row["setting"]) for row in rows)
        print(f"  {'setting':<{width}}  {'ECG/s':>8}  {'ECG/CPU-s':>9}  {'MB/s':>7}")
        for row in rows:
            print(
                f"  {row['setting']:<{width}}  {row['ecg_per_s']:8.0f}  "
                f"{row['ecg_per_cpu_s']:9.0f}  {row['mb_per_s']:7.0f}"
            )
    if args.json:
        machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_after": load_after}
        args.json.write_text(json.dumps({"machine": machine, "tables": tables}, indent=1))


if __name__ == "__main__":
    main()
