"""Patient-pair loader throughput (ECG/s) over an ArrayRecord file of (4096, 12) float16 ECGs.

Writes ``--records`` random float16 ECGs (1-4 per patient) to an ArrayRecord file in a temporary
directory (``--writer-options``: default ``group_size:1`` with ArrayRecord's default compression,
as tensorflow-datasets writes; ``group_size:1,uncompressed`` reads about 3x faster), then
measures, side by side:

* ``source loop``: ``source[i]`` over a shuffled order, decoded to float32 (the reading floor);
* ``pairs``: :func:`pclr_jax.data.loader.make_pair_loader` without augmentation;
* ``pairs + augment``: with every augmentation at probability 0.5;
* the same with grain worker processes (``--workers``);
* with ``--tfds``, all of it again on the train split of ``pclr_synthetic/small`` prepared by
  the tensorflow-datasets builder (tf.Example records: what ``pclr prepare`` writes).

ECG/s counts both views of every pair. Run: ``python benchmarks/loader_throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import tempfile
import time
from types import SimpleNamespace

import grain
import numpy as np
import pandas as pd
from array_record.python.array_record_module import ArrayRecordWriter

from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader

SHAPE = (4096, 12)
AUGMENT_ALL = {
    name: {"probability": 0.5}
    for name in ("time_warp", "amplitude_scale", "gaussian_noise", "random_crop", "drop_leads")
}


class RawECGSource:
    """Random access to an ArrayRecord file whose records are raw float16 ``SHAPE`` ECG bytes."""

    def __init__(self, path: str, record_ids: np.ndarray):
        self._records = grain.sources.ArrayRecordDataSource(path)
        self._record_ids = record_ids

    def __len__(self) -> int:
        return len(self._records)

    def _decode(self, key: int, record: bytes) -> dict:
        ecg = np.frombuffer(record, np.float16).reshape(SHAPE)
        return {"ecg": ecg, "record_id": self._record_ids[key]}

    def __getitem__(self, key: int) -> dict:
        return self._decode(key, self._records[key])


def write_split(
    directory: pathlib.Path, n_records: int, writer_options: str = "group_size:1", seed: int = 0
) -> SimpleNamespace:
    """Writes ``n_records`` ECGs and returns a prepared-split-like object over them."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 5, size=n_records)
    patients = np.repeat(np.arange(n_records), per_patient)[:n_records]
    index = pd.DataFrame(
        {"record_id": [f"r{i:06d}" for i in range(n_records)], "patient_id": patients.astype(str)}
    )
    path = str(directory / "ecgs.array_record")
    writer = ArrayRecordWriter(path, writer_options)
    for start in range(0, n_records, 256):
        chunk = rng.standard_normal((min(256, n_records - start), *SHAPE), np.float32)
        for ecg in chunk.astype(np.float16):
            writer.write(ecg.tobytes())
    writer.close()
    record_ids = index["record_id"].to_numpy()
    return SimpleNamespace(source=RawECGSource(path, record_ids), index=index)


def source_loop_rate(split: SimpleNamespace, n: int) -> float:
    order = np.random.default_rng(1).permutation(len(split.source))[:n]
    start = time.perf_counter()
    for i in order:
        split.source[int(i)]["ecg"].astype(np.float32)
    return n / (time.perf_counter() - start)


def loader_rate(split: SimpleNamespace, config: PairLoaderConfig, batches: int) -> float:
    loader = make_pair_loader(split, config, 0, 1)
    try:
        next(loader)  # start-up (worker processes, first epoch's order)
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(loader)
        elapsed = time.perf_counter() - start
        assert batch["view_a"].dtype == np.float32
    finally:
        loader.close()
    return 2 * config.batch_pairs * batches / elapsed


def cpu_name() -> str:
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def measure(split: SimpleNamespace, args: argparse.Namespace) -> list[tuple[str, float]]:
    """The source loop, then the loader in every setting, on one split."""
    source_loop_rate(split, 512)  # warm the page cache
    rows = [("source loop (shuffled, to float32)", source_loop_rate(split, 1024))]
    settings = [(f"threads={t}", dict(read_threads=t)) for t in args.read_threads]
    settings += [(f"workers={w}", dict(worker_count=w)) for w in args.workers]
    for name, options in settings:
        for label, augmentations in (("pairs", {}), ("pairs + augment", AUGMENT_ALL)):
            config = PairLoaderConfig(
                batch_pairs=args.batch_pairs, seed=0, augmentations=augmentations, **options
            )
            rows.append((f"{label}, {name}", loader_rate(split, config, args.batches)))
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
    parser.add_argument("--read-threads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, nargs="*", default=[2])
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
    print(f"load average after: {os.getloadavg()[0]:.1f} (other jobs share these cores)")
    for title, rows in tables.items():
        print(f"\n{title}")
        width = max(len(name) for name, _ in rows)
        for name, rate in rows:
            print(f"  {name:<{width}}  {rate:8.0f} ECG/s")


if __name__ == "__main__":
    main()
