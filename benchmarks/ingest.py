"""Ingest throughput of the prepared-data-set builders: where the time goes.

For each builder it measures, side by side in one run:

* ``produce``: making the examples alone (synthetic: generating; folder: reading WFDB files and
  resampling, with ``--workers`` processes), no writing;
* ``serialise``: tfds's own example encoding + serialisation of the same examples (what its
  writer does per example before the array_record write), no production;
* ``prepare``: the whole ``download_and_prepare`` (produce + serialise + shuffle buffer + write +
  index), fresh ``data_dir``.

Usage::

    python benchmarks/ingest.py --synthetic-patients 300 --folder ../shared/data/real_ecg_dev

``--folder`` is a directory with ``records.csv`` as ``pclr_ecg_folder`` expects (``record``,
``patient_id``...); ``real_ecg_dev`` (the developers' folder of real WFDB records beside the
checkout, not shipped) has such a ``records.csv``; ``tests/data`` holds a few real records too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class _ManualDir:
    """The one attribute of a tfds download manager that the builders' manifests read."""

    def __init__(self, manual_dir):
        self.manual_dir = manual_dir


def produce_examples(builder, manual_dir) -> list[dict]:
    """Every example the builder would write (all splits), produced without writing."""
    from pclr_jax.data.builders.base import _Run

    manifest, duplicates = builder._plan(builder._build_manifest(_ManualDir(manual_dir)))
    builder._run = _Run(manifest, duplicates)
    return [
        example
        for split in manifest["split"].unique()
        for _, example in builder._generate_examples(split)
    ]


def measure(builder_cls, config, manual_dir, workers: int) -> dict[str, float]:
    """Seconds and ECG/s of produce / serialise / prepare for one builder config."""
    data_dir = tempfile.mkdtemp(prefix="pclr_ingest_")
    try:
        builder = builder_cls(config=config, data_dir=data_dir, workers=workers)
        start = time.perf_counter()
        examples = produce_examples(builder, manual_dir)
        produce = time.perf_counter() - start

        serializer = example_serializer.ExampleSerializer(
            builder.info.features.get_serialized_info()
        )
        start = time.perf_counter()
        size = 0
        for example in examples:
            size += len(serializer.serialize_example(builder.info.features.encode_example(example)))
        serialise = time.perf_counter() - start

        fresh = builder_cls(config=config, data_dir=data_dir + "/fresh", workers=workers)
        start = time.perf_counter()
        fresh.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
        prepare = time.perf_counter() - start
        n = len(examples)
        return {
            "ecgs": n,
            "bytes_per_ecg": size / max(n, 1),
            "produce_s": produce,
            "serialise_s": serialise,
            "prepare_s": prepare,
        }
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-patients", type=int, default=300)
    parser.add_argument("--n-samples", type=int, default=4096)
    parser.add_argument("--folder", help="a pclr_ecg_folder manual_dir (records.csv + files)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()

    from pclr_jax.data.builders import PclrEcgFolder, PclrSynthetic, SyntheticBuilderConfig
    from pclr_jax.data.builders.base import ECGConfig

    tfds.disable_progress_bar()
    load = os.getloadavg()
    print(f"machine: {_cpu_name()}, {os.cpu_count()} CPUs, load {load[0]:.1f}/{load[1]:.1f}")
    runs = [
        (
            "pclr_synthetic",
            PclrSynthetic,
            SyntheticBuilderConfig(
                name="bench",
                n_patients=args.synthetic_patients,
                n_samples=args.n_samples,
            ),
            None,
            0,
        )
    ]
    if args.folder:
        for workers in args.workers:
            runs.append(
                (
                    f"pclr_ecg_folder (workers={workers})",
                    PclrEcgFolder,
                    ECGConfig(name="bench", n_samples=args.n_samples),
                    args.folder,
                    workers,
                )
            )
    print(
        f"{'builder':<32} {'ECGs':>6} {'KB/ECG':>7} {'produce ECG/s':>14} "
        f"{'serialise ECG/s':>16} {'prepare ECG/s':>14} {'produce+serialise share':>24}"
    )
    for label, builder_cls, config, manual_dir, workers in runs:
        r = measure(builder_cls, config, manual_dir, workers)
        n = r["ecgs"]
        share = (r["produce_s"] + r["serialise_s"]) / r["prepare_s"]
        print(
            f"{label:<32} {n:>6} {r['bytes_per_ecg'] / 1024:>7.1f} {n / r['produce_s']:>14.0f} "
            f"{n / r['serialise_s']:>16.0f} {n / r['prepare_s']:>14.0f} {share:>23.0%}"
        )
    print(f"(one run each; n_samples={args.n_samples}; numpy {np.__version__})")


if __name__ == "__main__":
    main()
