"""The evidence behind :data:`pclr_jax.data.copies.COPY_CORRELATION`: fingerprint correlations of
copies of one recording versus different ECGs of one patient, on real PTB-XL ECGs.

* copies: every PTB-XL ECG of ``--real`` (``shared/data/real_ecg_dev``) present both at 100 Hz
  (``records100``) and 500 Hz (``records500``): the same recording, two files;
* different ECGs of one patient: every pair of distinct ECGs of one patient in ``--ptbxl``
  (PTB-XL's ``records100`` with ``ptbxl_patient_map.csv``: all patients with two ECGs or more).

Prints the lowest copy correlations, the highest different-ECG correlations and how many pairs
fall on each side of the threshold. Usage (about 2 min on 2 cores)::

    python benchmarks/content_copies.py --real ../shared/data/real_ecg_dev --ptbxl PTBXL_DIR
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os

import numpy as np
import pandas as pd

from pclr_jax.data import copies
from pclr_jax.data.ingest import PrepareSpec
from pclr_jax.data.record_tasks import read_wfdb_task, record_fingerprint


def _fingerprint_of(path: str) -> np.ndarray | None:
    record = read_wfdb_task({"record_id": path, "path": path})
    try:
        return record_fingerprint(record, PrepareSpec())
    except ValueError:  # a record that preparation rejects has no fingerprint
        return None


def fingerprints(paths: list[str], workers: int) -> list[np.ndarray | None]:
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_fingerprint_of, paths, chunksize=64))


def copy_correlations(real: str, workers: int) -> np.ndarray:
    table = pd.read_csv(os.path.join(real, "records.csv"))
    ptbxl = table[table.ecg_id.notna()]
    both = ptbxl.groupby("ecg_id").filter(lambda g: set(g.sampling_rate) == {100, 500})
    pairs = both.sort_values(["ecg_id", "sampling_rate"]).record.to_numpy().reshape(-1, 2)
    prints = fingerprints([os.path.join(real, r) for r in pairs.ravel()], workers)
    return np.array(
        [copies.correlation(a, b) for a, b in zip(prints[0::2], prints[1::2], strict=True)]
    )


def different_ecg_correlations(ptbxl: str, workers: int) -> np.ndarray:
    table = pd.read_csv(os.path.join(ptbxl, "ptbxl_patient_map.csv"))
    table = table[table.groupby("patient_id").ecg_id.transform("size") > 1]
    prints = fingerprints([os.path.join(ptbxl, f) for f in table.filename_lr], workers)
    by_patient: dict[float, list[np.ndarray]] = {}
    for patient, fp in zip(table.patient_id, prints, strict=True):
        if fp is not None:
            by_patient.setdefault(patient, []).append(fp)
    return np.array(
        [
            copies.correlation(a, b)
            for group in by_patient.values()
            for a, b in itertools.combinations(group, 2)
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", required=True, help="shared/data/real_ecg_dev")
    parser.add_argument("--ptbxl", required=True, help="PTB-XL with records100/ and the map")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    same = copy_correlations(args.real, args.workers)
    different = different_ecg_correlations(args.ptbxl, args.workers)
    threshold = copies.COPY_CORRELATION
    print(f"copies (100 vs 500 Hz file of one ECG): {len(same)} pairs")
    print(f"  lowest 5: {np.round(np.sort(same)[:5], 5).tolist()}")
    print(f"  below {threshold}: {int((same < threshold).sum())}")
    print(f"different ECGs of one patient: {len(different)} pairs")
    print(f"  highest 5: {np.round(np.sort(different)[-5:], 5).tolist()}")
    print(f"  quantiles 50/99/99.9%: {np.round(np.quantile(different, [0.5, 0.99, 0.999]), 4)}")
    print(f"  at or above {threshold}: {int((different >= threshold).sum())}")


if __name__ == "__main__":
    main()
