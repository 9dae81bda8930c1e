"""Side-by-side calibration table: model-free statistics of real PTB-XL patients with several ECGs
and of synthetic ``pclr_synthetic`` configs (:mod:`pclr_jax.data.synthetic.calibration`).

    PTBXL_DIR=path/to/ptb-xl python scripts/calibrate_synthetic.py \
        --configs cpu_default cpu_realistic --synthetic-patients 1000 --out calibration.md

``PTBXL_DIR`` holds ``ptbxl_patient_map.csv`` (or ``ptbxl_database.csv``, or
``ptbxl_database_subset.csv`` as in ``shared/data/real_ecg_dev/ptbxl``) and ``records100/``.
Real ECGs: every ECG of every patient with two or more (5,041 ECGs of 2,111 patients in v1.0.3),
or a random sample of ``--real-patients`` of those patients. Synthetic: every ECG of the first
``--synthetic-patients`` patients of each config (patients are independent of the set's size).
The real measurements can be cached (``--real-cache``, a parquet + npy pair) for repeated runs.

Held out: the statistics in :data:`VALIDATION` were not used to set any knob of the configs that
were tuned after them (``cpu_calibrated``); the table lists them apart, as validation.
``--json`` writes every number (the raw output); ``--from-json`` renders the markdown from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time

import numpy as np
import pandas as pd
import wfdb
from calibrate_transfer import replace_doc_block

from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic
from pclr_jax.data.synthetic import generator as synthetic
from pclr_jax.data.synthetic.calibration import cohort_statistics, measure_cohort

ROWS = (
    ("patients", "patients with 2+ measurable ECGs", "{:.0f}"),
    ("ecgs", "ECGs measured", "{:.0f}"),
    ("dropped_ecgs", "ECGs with < 3 whole beats (left out)", "{:.0f}"),
    ("retrieval_top1", "template retrieval top-1 (galleries of 2 ECGs per patient)", "{:.3f}"),
    ("same_patient_auc", "P(same-patient pair closer than different-patient pair)", "{:.3f}"),
    ("same_over_different_distance", "median distance same / different patient", "{:.3f}"),
    ("heart_rate_bpm_within", "heart rate: median abs difference, same patient (bpm)", "{:.1f}"),
    ("heart_rate_bpm_between", "heart rate: median abs difference, different patients", "{:.1f}"),
    ("qrs_axis_deg_within", "QRS axis: median abs difference, same patient (deg)", "{:.1f}"),
    ("qrs_axis_deg_between", "QRS axis: median abs difference, different patients", "{:.1f}"),
    ("log_qrs_amplitude_within", "log QRS amplitude: median abs diff., same patient", "{:.3f}"),
    ("log_qrs_amplitude_between", "log QRS amplitude: median abs diff., other patients", "{:.3f}"),
    ("heart_rate_bpm_median", "heart rate, median (bpm)", "{:.1f}"),
    ("qrs_amplitude_mv_median", "QRS peak-to-peak, mean over leads, median (mV)", "{:.2f}"),
    ("t_amplitude_mv_median", "T amplitude, mean over leads, median (mV)", "{:.3f}"),
    ("noise_mv_median", "white-noise level, median (mV)", "{:.4f}"),
    ("noise_mv_p90", "white-noise level, 90th percentile (mV)", "{:.4f}"),
    ("baseline_wander_mv_median", "baseline wander (< 0.5 Hz), median (mV)", "{:.3f}"),
    ("baseline_wander_mv_p90", "baseline wander, 90th percentile (mV)", "{:.3f}"),
)

# Statistics held out from tuning (validation): no knob was set by looking at them. The tuning
# targets were template retrieval, the same-patient AUC, heart-rate change, noise and wander.
VALIDATION = (
    "same_over_different_distance",
    "qrs_axis_deg_within",
    "log_qrs_amplitude_within",
    "log_qrs_amplitude_between",
    "t_amplitude_mv_median",
)


def real_cohort(ptbxl_dir: pathlib.Path, patients: int | None, seed: int):
    """Measures PTB-XL's multi-ECG patients (100 Hz files)."""
    for file_name in ("ptbxl_patient_map.csv", "ptbxl_database.csv", "ptbxl_database_subset.csv"):
        table_path = ptbxl_dir / file_name
        if table_path.exists():
            break
    table = pd.read_csv(table_path)
    counts = table["patient_id"].value_counts()
    multi = np.sort(counts.index[counts >= 2].to_numpy())
    if patients is not None and patients < len(multi):
        multi = np.sort(np.random.default_rng(seed).choice(multi, patients, replace=False))
    rows = table[table["patient_id"].isin(multi)].sort_values("ecg_id")
    ecgs = [wfdb.rdsamp(str(ptbxl_dir / name))[0] for name in rows["filename_lr"]]
    return measure_cohort(ecgs, rows["patient_id"].to_numpy())


def synthetic_cohort(config_name: str, patients: int):
    """Measures every ECG of the first ``patients`` patients of a pclr_synthetic config."""
    builder_config = next(c for c in PclrSynthetic.BUILDER_CONFIGS if c.name == config_name)
    config = builder_config.synthetic_config()
    config = dataclasses.replace(config, n_patients=min(patients, config.n_patients))
    ecgs, metadata = synthetic.generate(config)
    return measure_cohort(list(ecgs), metadata["patient_id"].to_numpy(), config.duration_s)


def markdown_table(columns: dict[str, dict[str, float]]) -> str:
    """Tuned statistics first, then the held-out ones (:data:`VALIDATION`) under their own
    heading row."""
    lines = [
        "| statistic | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    tuned = [row for row in ROWS if row[0] not in VALIDATION]
    held_out = [row for row in ROWS if row[0] in VALIDATION]
    for rows, heading in ((tuned, None), (held_out, "*validation (held out from tuning)*")):
        if heading:
            lines.append(f"| {heading} |" + " |" * len(columns))
        for key, label, fmt in rows:
            cells = [fmt.format(stats[key]) for stats in columns.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl-dir", default=os.environ.get("PTBXL_DIR"))
    parser.add_argument(
        "--configs", nargs="+", default=["cpu_default", "cpu_realistic", "cpu_calibrated"]
    )
    parser.add_argument("--synthetic-patients", type=int, default=1000)
    parser.add_argument("--real-patients", type=int, default=None, help="default: all")
    parser.add_argument("--real-cache", type=pathlib.Path, default=None)
    parser.add_argument("--gallery-patients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the raw numbers")
    parser.add_argument("--from-json", type=pathlib.Path, default=None, help="only render it")
    parser.add_argument(
        "--update-doc",
        type=pathlib.Path,
        default=None,
        help="also replace the block 'statistics' of this markdown file (e.g. docs/data.md)",
    )
    args = parser.parse_args()
    if args.from_json is not None:
        text = markdown_table(json.loads(args.from_json.read_text())["columns"])
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
        if args.update_doc is not None:
            replace_doc_block(args.update_doc, "statistics", text + "\n")
        return

    columns = {}
    if args.ptbxl_dir:
        start = time.time()
        cache = args.real_cache
        if cache is not None and cache.with_suffix(".parquet").exists():
            table = pd.read_parquet(cache.with_suffix(".parquet"))
            representations = np.load(cache.with_suffix(".npy"))
        else:
            table, representations = real_cohort(
                pathlib.Path(args.ptbxl_dir), args.real_patients, args.seed
            )
            if cache is not None:
                table.to_parquet(cache.with_suffix(".parquet"))
                np.save(cache.with_suffix(".npy"), representations)
        columns["PTB-XL"] = cohort_statistics(
            table, representations, args.gallery_patients, seed=args.seed
        )
        print(f"PTB-XL measured in {time.time() - start:.0f} s", flush=True)
    for name in args.configs:
        start = time.time()
        table, representations = synthetic_cohort(name, args.synthetic_patients)
        columns[name] = cohort_statistics(
            table, representations, args.gallery_patients, seed=args.seed
        )
        print(f"{name} generated and measured in {time.time() - start:.0f} s", flush=True)
    text = markdown_table(columns)
    print(text)
    if args.json is not None:
        raw = {
            "columns": columns,
            "validation": list(VALIDATION),
            "arguments": {
                k: os.path.relpath(v) if k == "ptbxl_dir" and v else str(v)
                for k, v in vars(args).items()
            },
            "date": time.strftime("%Y-%m-%d"),
        }
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
    if args.update_doc is not None:
        replace_doc_block(args.update_doc, "statistics", text + "\n")
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
