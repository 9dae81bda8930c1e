"""Ingest rates of ``pclr prepare``: ECG/s per worker process, per source format, on both paths.

Sources (each prepared at the model's 4096 samples over 10 s):

* ``wfdb100``: PTB-XL's 100 Hz WFDB records of ``--real`` (``shared/data/real_ecg_dev``);
* ``wfdb500``: its 500 Hz WFDB records (PTB-XL ``records500`` and CinC 2021);
* ``hdf5``: an HDF5 file in the CODE-15% layout (``exams_part0.hdf5``: ``tracings`` ``(N, 4096,
  12)`` float32 at 400 Hz, 10 s exams zero-padded, plus ``exams.csv``), written here from the
  synthetic generator's ECGs, read by the ``code15`` builder;
* ``synthetic``: the ``pclr_synthetic`` generator.

Measured, side by side in one run, for each source:

* ``worker``: the worker function alone in this process (read, validate, resample, fingerprint,
  settle copies: what one worker process does per ECG on either path), no writing;
* ``serialise``: tfds's example encoding + serialisation of the same examples (what the writer
  adds per ECG);
* ``pool``: the whole default ``download_and_prepare`` with one worker process (it reads, this
  process serialises and writes);
* ``beam``: the whole ``download_and_prepare`` on Beam's DirectRunner (one process does all),
  at the full size and at a quarter of it: the difference gives the marginal per-process rate
  and the fixed cost of the pipeline;
* ``index``: the driver's last step on Beam, reading the finished shards back to build the index.

It then prints a projection for MIMIC-IV-ECG (about 800,000 ECGs, WFDB 500 Hz) and a 10-million-
ECG collection on 16, 64 and 512 workers. Usage (about 10 min on 2 busy cores)::

    python benchmarks/ingest.py --real ../shared/data/real_ecg_dev
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

PROJECTIONS = (("MIMIC-IV-ECG", 800_000), ("10 million ECGs", 10_000_000))
WORKERS = (16, 64, 512)


def machine() -> str:
    """CPU model, family/model numbers, core count and widest vector extension, from
    ``/proc/cpuinfo`` (AMD family 25 model 17 is Zen 4; family 26 is Zen 5; 23/49 is Zen 2)."""
    name, numbers, flags = platform.processor() or "unknown CPU", {}, set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                name = value
            elif key in ("cpu family", "model"):
                numbers[key] = value
            elif key == "flags":
                flags = set(value.split())
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    family = f"family {numbers.get('cpu family', '?')} model {numbers.get('model', '?')}"
    return f"{name} ({family}), {os.cpu_count()} CPUs, {vectors}"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system): a rate per CPU
    second is a rate per busy worker process, whatever else loads the machine."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class _Clock:
    """Wall and CPU seconds since construction."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def rates(self, n: int) -> tuple[float, float]:
        """``(ECG per wall second, ECG per CPU second)``."""
        return n / (time.perf_counter() - self.wall), n / (cpu_seconds() - self.cpu)


class _ManualDir:
    """The one attribute of a tfds download manager that the builders' manifests read."""

    def __init__(self, manual_dir):
        self.manual_dir = manual_dir


def produce_examples(builder, manual_dir) -> list[dict]:
    """Every example the builder would write (all splits), produced in this process without
    writing (the worker function and the settling of each patient's records)."""
    from pclr_jax.data.builders.base import _Run

    manifest, duplicates = builder._plan(builder._build_manifest(_ManualDir(manual_dir)))
    builder._run = _Run(manifest, duplicates)
    return [
        example
        for split in manifest["split"].unique()
        for _, example in builder._generate_examples(split)
    ]


def folder_source(real: str, prefixes: tuple[str, ...], limit: int, directory: str) -> str:
    """A ``pclr_ecg_folder`` manual_dir whose ``records.csv`` lists ``real``'s records under
    ``prefixes`` (at most ``limit``) by absolute path."""
    table = pd.read_csv(os.path.join(real, "records.csv"))
    table = table[table.record.str.startswith(prefixes)].head(limit)
    os.makedirs(directory)
    pd.DataFrame(
        {
            "record": [os.path.join(os.path.abspath(real), r) for r in table.record],
            "record_id": table.record,
            "patient_id": table.patient_id,
            "age": table.age,
            "sex": table.sex,
        }
    ).to_csv(os.path.join(directory, "records.csv"), index=False)
    return directory


def code15_source(n_exams: int, directory: str) -> str:
    """``exams.csv`` and ``exams_part0.hdf5`` in CODE-15%'s layout: 10 s synthetic ECGs at 400 Hz
    (4000 samples) zero-padded to 4096, two exams per patient."""
    import h5py

    from pclr_jax.data.builders.pclr_synthetic import render_patients
    from pclr_jax.data.synthetic.config import SyntheticConfig

    config = SyntheticConfig(
        n_patients=n_exams, ecgs_per_patient=(1, 1), n_samples=4000, duration_s=10.0
    )
    ecgs, _ = render_patients(config, np.arange(n_exams))
    tracings = np.zeros((n_exams, 4096, 12), np.float32)
    tracings[:, 48:4048] = ecgs
    os.makedirs(directory)
    with h5py.File(os.path.join(directory, "exams_part0.hdf5"), "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.arange(1, n_exams + 1)
    exams = pd.DataFrame(
        {
            "exam_id": np.arange(1, n_exams + 1),
            "age": 60,
            "is_male": True,
            "patient_id": np.arange(n_exams) // 2,
            "trace_file": "exams_part0.hdf5",
        }
    )
    for label in ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST", "normal_ecg"):
        exams[label] = False
    exams.to_csv(os.path.join(directory, "exams.csv"), index=False)
    return directory


def timed_prepare(builder_cls, config, manual_dir, data_dir, workers, beam: bool):
    """``(wall s, CPU s, builder)`` of one fresh ``download_and_prepare``."""
    builder = builder_cls(config=config, data_dir=data_dir, workers=workers)
    if beam:
        from apache_beam.options.pipeline_options import PipelineOptions

        download = tfds.download.DownloadConfig(
            manual_dir=manual_dir, beam_runner="DirectRunner", beam_options=PipelineOptions([])
        )
    else:
        download = tfds.download.DownloadConfig(manual_dir=manual_dir)
    wall, cpu = time.perf_counter(), cpu_seconds()
    builder.download_and_prepare(download_config=download)
    return time.perf_counter() - wall, cpu_seconds() - cpu, builder


def written(builder) -> int:
    return sum(split.num_examples for split in builder.info.splits.values())


def measure(make_builder, manual_dir, small_manual_dir, work: str) -> dict[str, float]:
    """The rates of one source (ECG per wall second and per CPU second);
    ``make_builder(small=False) -> (cls, config)``."""
    from pclr_jax.data.builders import beam_prepare

    results = {}
    cls, config = make_builder()
    with tempfile.TemporaryDirectory(dir=work) as data_dir:
        builder = cls(config=config, data_dir=data_dir, workers=0)
        produce_examples(builder, small_manual_dir)  # warm-up: imports, caches
        clock = _Clock()
        examples = produce_examples(builder, manual_dir)
        results["worker"] = clock.rates(len(examples))
        features = builder.info.features
        serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
        clock = _Clock()
        size = sum(len(serializer.serialize_example(features.encode_example(e))) for e in examples)
        results["serialise"] = clock.rates(len(examples))
        results["ecgs"], results["kb_per_ecg"] = len(examples), size / len(examples) / 1024
        del examples
    with tempfile.TemporaryDirectory(dir=work) as data_dir:
        wall, cpu, builder = timed_prepare(cls, config, manual_dir, data_dir, 1, beam=False)
        results["pool"] = (written(builder) / wall, written(builder) / cpu)
    with tempfile.TemporaryDirectory(dir=work) as data_dir:
        small_wall, small_cpu, small = timed_prepare(
            cls, make_builder(small=True)[1], small_manual_dir, data_dir + "/s", 0, beam=True
        )
        wall, cpu, builder = timed_prepare(cls, config, manual_dir, data_dir, 0, beam=True)
        n, n_small = written(builder), written(small)
        results["beam"] = (n / wall, n / cpu)
        results["beam_marginal"] = (
            (n - n_small) / (wall - small_wall),
            (n - n_small) / (cpu - small_cpu),
        )
        results["beam_fixed_s"] = small_wall - n_small / results["beam_marginal"][0]
        clock = _Clock()
        for split in builder.info.splits:
            beam_prepare.index_rows_from_shards(builder, split)
        results["index"] = clock.rates(n)
    return results


def projection_rows(rate: float, index_rate: float) -> list[str]:
    """Markdown rows: hours to prepare each collection on each worker count, assuming the
    per-worker rate holds (reading not limited by storage) plus the driver's serial index pass;
    the cluster's own start-up is not included."""
    rows = []
    for name, n in PROJECTIONS:
        cells = [f"{(n / (w * rate) + n / index_rate) / 3600:.2f} h" for w in WORKERS]
        rows.append(f"| {name} ({n:,} ECGs) | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", required=True, help="shared/data/real_ecg_dev")
    parser.add_argument("--records", type=int, default=256, help="ECGs per source at most")
    args = parser.parse_args()

    from pclr_jax.data.builders import Code15, PclrEcgFolder, PclrSynthetic
    from pclr_jax.data.builders.base import ECGConfig
    from pclr_jax.data.builders.pclr_synthetic import SyntheticBuilderConfig

    tfds.disable_progress_bar()
    load_before = os.getloadavg()
    print(f"machine: {machine()}; load before {load_before[0]:.1f}")
    n = args.records
    work = tempfile.mkdtemp(prefix="pclr_ingest_")
    try:
        folder = ECGConfig(name="bench", n_samples=4096)
        sources = {
            "wfdb100": (
                lambda small=False: (PclrEcgFolder, folder),
                folder_source(args.real, ("ptbxl/records100",), n, f"{work}/w100"),
                folder_source(args.real, ("ptbxl/records100",), n // 4, f"{work}/w100s"),
            ),
            "wfdb500": (
                lambda small=False: (PclrEcgFolder, folder),
                folder_source(args.real, ("ptbxl/records500", "cinc2021"), n, f"{work}/w500"),
                folder_source(args.real, ("ptbxl/records500", "cinc2021"), n // 4, f"{work}/w5s"),
            ),
            "hdf5": (
                lambda small=False: (Code15, folder),
                code15_source(n, f"{work}/h5"),
                code15_source(n // 4, f"{work}/h5s"),
            ),
            "synthetic": (
                lambda small=False: (
                    PclrSynthetic,
                    SyntheticBuilderConfig(
                        name="bench_small" if small else "bench",
                        n_patients=max(n // 12, 2) if small else n // 3,
                        n_samples=4096,
                    ),
                ),
                None,
                None,
            ),
        }
        print(
            "| source | ECGs | KB/ECG | worker | serialise | pool, 1 worker | Beam Direct "
            "| Beam marginal | index read | Beam fixed s (wall) |"
        )
        print("|" + "---|" * 10)
        results = {}
        for name, (make, manual, small) in sources.items():
            r = results[name] = measure(make, manual, small, work)
            cells = [
                f"{r[k][0]:.0f} ({r[k][1]:.0f})"
                for k in ("worker", "serialise", "pool", "beam", "beam_marginal", "index")
            ]
            print(
                f"| {name} | {r['ecgs']} | {r['kb_per_ecg']:.0f} | "
                + " | ".join(cells)
                + f" | {r['beam_fixed_s']:.0f} |"
            )
        load_after = os.getloadavg()
        print(
            f"(ECG per wall second (per CPU second); one run each; load after "
            f"{load_after[0]:.1f}; numpy {np.__version__})"
        )
        for name in ("wfdb500", "hdf5"):
            r = results[name]
            rate, index_rate = r["beam_marginal"][1], r["index"][1]
            print(
                f"\nprojection from {name}: {rate:.0f} ECG per CPU second per worker (Beam "
                f"marginal), driver index pass {index_rate:.0f} ECG per CPU second"
            )
            print("| collection | " + " | ".join(f"{w} workers" for w in WORKERS) + " |")
            print("|---|" + "---|" * len(WORKERS))
            print("\n".join(projection_rows(rate, index_rate)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
