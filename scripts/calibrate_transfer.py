"""Transfer to real ECGs as a calibration criterion: the default job trained on each synthetic
config, its encoder applied to real ECGs, side by side with a randomly initialised encoder.

    python scripts/calibrate_transfer.py --configs cpu_default cpu_realistic cpu_calibrated \
        --real ../shared/data/real_ecg_dev --workdirs runs/calibration \
        --out docs/calibration/transfer

For every config: ``<workdirs>/<config>/encoder`` is used if it exists, else the default job
(``train.py --config=configs/default.py --config.data.config=<config>``, run with ``nice``) trains
it there first. The real ECGs (``--real``, a folder in the layout of ``shared/data/real_ecg_dev``:
``records.csv`` + WFDB records) are read, one copy per recording (:func:`real_ecg_table`),
prepared as ``pclr embed`` prepares them (``ml4h`` resampling to the encoder's input) and embedded
by every encoder and by a randomly initialised one of the same architecture. Optionally the test
split of a prepared PTB-XL (``--ptbxl-data-dir``, from ``pclr prepare ptbxl``: strat_fold 10) is
evaluated the same way. Reported (:func:`pclr_jax.evaluation.transfer.transfer_evaluation`):
patient retrieval top-1/top-5 among all the real ECGs, linear probes at a few label sizes with
repeats, every encoder's paired difference to ``--reference``, and beside them the synthetic test
split's own figures from each job's ``summary.json`` (LVH AUROC of PCLR and of random init).

Writes ``<out>.json`` (everything, raw), ``<out>.csv`` (the long table) and ``<out>.md`` (tables
generated from the JSON; ``--render-only`` regenerates them from an existing JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Probe tasks on the real ECGs: label column of real_ecg_table and kind.
REAL_TASKS = (
    "female:binary",
    "age:regression",
    "norm:binary",
    "mi:binary",
    "hyp:binary",
    "afib:binary",
)
SYNTHETIC_METRICS = ("retrieval_top1", "lvh_auroc", "af_auroc", "sex_auroc", "age_r2")


def real_ecg_table(root: pathlib.Path) -> tuple[pd.DataFrame, list]:
    """Every 12-lead recording of a ``real_ecg_dev``-style folder, one copy per recording, and its
    :class:`~pclr_jax.signals.records.ECGRecord`.

    PTB-XL: the 100 Hz file of every ``ecg_id`` (every ECG has one, so all PTB-XL ECGs share one
    source rate and the rate cannot tell patients apart; the 500 Hz files of ecg_id <= 500 are the
    same recordings); then copies found by content within a patient
    (:mod:`pclr_jax.data.copies`, e.g. ecg_ids 456/457, which PTB-XL lists twice) keep their
    first row. Other sources: every record, the first 10 s (the PTB DB record is 38.4 s long).
    Labels: ``female`` (1/0), ``age``; PTB-XL only (NaN elsewhere): ``norm``, ``mi``, ``hyp``
    (diagnostic superclasses; NaN for an ECG without a diagnostic statement) and ``afib`` (the
    ``AFIB`` statement).
    """
    from pclr_jax.data.copies import copy_groups, fingerprint
    from pclr_jax.signals.preprocess import select_leads, to_millivolts
    from pclr_jax.signals.records import read_wfdb

    table = pd.read_csv(root / "records.csv")
    table = table[~table["record"].str.contains("records500/")].reset_index(drop=True)
    records = []
    for record_path in table["record"]:
        record = read_wfdb(root / record_path, record_id=record_path)
        samples = int(round(10.0 * record.sampling_rate))
        record.signal = record.signal[:samples]
        records.append(record)
    ptbxl = (table["source"] == "PTB-XL").to_numpy()
    drop = np.zeros(len(table), bool)
    for _, rows in table[ptbxl].groupby("patient_id"):
        if len(rows) < 2:
            continue
        prints = [
            fingerprint(to_millivolts(select_leads(records[i]), records[i].units, "")).astype(
                np.float32
            )
            for i in rows.index
        ]
        for group in copy_groups(prints):
            drop[rows.index[group[1:]]] = True
    superclasses = table["diag_superclass"].fillna("").str.split(";")
    has_superclass = table["diag_superclass"].notna() & ptbxl
    out = pd.DataFrame(
        {
            "record": table["record"],
            "source": table["source"],
            "patient_id": table["patient_id"],
            "ecg_id": table["ecg_id"],
            "age": table["age"],
            "female": table["sex"].map({"F": 1.0, "M": 0.0}),
        }
    )
    for name in ("NORM", "MI", "HYP"):
        out[name.lower()] = np.where(
            has_superclass, superclasses.map(lambda s, n=name: float(n in s)), np.nan
        )
    out["afib"] = np.where(ptbxl, table["labels"].str.contains("'AFIB'").astype(float), np.nan)
    out["copy_dropped"] = drop
    kept = ~drop
    return out[kept].reset_index(drop=True), [r for r, k in zip(records, kept, strict=True) if k]


def prepare(records: list, n_samples: int) -> np.ndarray:
    """``(N, n_samples, 12)`` float32 mV, prepared as ``pclr embed`` does (ml4h resampling)."""
    from pclr_jax.signals.preprocess import prepare_ecg

    return np.stack([prepare_ecg(r, n_samples, expected_duration_s=10.0) for r in records])


def prepared_split(data_dir: str, name: str, split: str, config: str | None, n_samples: int):
    """A prepared split's ECGs resampled to ``n_samples`` and its index (``patient_id`` and the
    labels; ``female`` from ``sex``)."""
    from pclr_jax.data.prepared import load_prepared
    from pclr_jax.signals.preprocess import resample_ml4h

    prepared = load_prepared(name, split, data_dir, config)
    ecgs = np.stack(
        [
            resample_ml4h(np.asarray(prepared.source[i]["ecg"], np.float32), n_samples)
            for i in range(len(prepared))
        ]
    ).astype(np.float32)
    index = prepared.index.copy()
    index["female"] = index["sex"].where(index["sex"] >= 0)
    return index, ecgs


def train_if_missing(config_name: str, workdir: pathlib.Path, data_dir: pathlib.Path) -> float:
    """Runs the default job on ``config_name`` into ``workdir`` unless its encoder exists;
    returns the seconds it took (0 when it existed)."""
    if (workdir / "encoder").exists():
        return 0.0
    start = time.time()
    command = [
        "nice",
        "-n",
        "19",
        sys.executable,
        str(ROOT / "train.py"),
        f"--config={ROOT / 'configs' / 'default.py'}",
        f"--config.data.config={config_name}",
        f"--config.data.data_dir={data_dir}",
        f"--workdir={workdir}",
    ]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return time.time() - start


def synthetic_rows(workdir: pathlib.Path) -> dict[str, dict[str, float]]:
    """The default job's own test-split figures (``summary.json``): source -> metric -> value."""
    summary = json.loads((workdir / "summary.json").read_text())
    return {
        source: {m: float(v) for m, v in metrics.items() if m in SYNTHETIC_METRICS}
        for source, metrics in summary["metrics"].items()
    }


def render(result: dict) -> str:
    """The markdown report of a result JSON (tables generated from its numbers)."""
    from pclr_jax.evaluation.transfer import side_by_side

    configs = result["configs"]
    sources = ["random_init", *configs, "chance"]
    parts = []
    for name, evaluation in result["evaluations"].items():
        frame = pd.DataFrame(evaluation["rows"])
        info = evaluation["data"]
        parts.append(
            f"**{name}**: {info['ecgs']} ECGs of {info['patients']} patients "
            f"({info['retrieval_queries']} retrieval queries from the "
            f"{info['multi_ecg_patients']} patients with 2+ ECGs). Reference for the paired "
            f"differences in brackets: `{result['reference']}`.\n\n"
            + side_by_side(frame, [s for s in sources if s in set(frame["source"])])
        )
    lines = [
        "| synthetic test split (the job's own report) | "
        + " | ".join(f"{c} PCLR | {c} random" for c in configs)
        + " |",
        "| --- |" + " --- | --- |" * len(configs),
    ]
    for metric in SYNTHETIC_METRICS:
        cells = []
        for config in configs:
            rows = result["synthetic"][config]
            cells += [
                f"{rows.get(source, {}).get(metric, float('nan')):.3f}"
                for source in ("pclr", "random_init")
            ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def doc_block(text: str, name: str) -> str:
    """The generated block ``name`` of a markdown ``text`` (between its begin and end markers)."""
    begin, end = f"<!-- generated:{name}:begin -->\n", f"<!-- generated:{name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no block {name!r} (markers {begin.strip()} ... {end})")
    return text.split(begin, 1)[1].split(end, 1)[0]


def replace_doc_block(path: pathlib.Path, name: str, block: str) -> None:
    """Replaces the generated block ``name`` of the markdown file ``path`` by ``block``."""
    text = path.read_text()
    old = doc_block(text, name)
    begin = f"<!-- generated:{name}:begin -->\n"
    path.write_text(text.replace(begin + old, begin + block, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", nargs="+", default=["cpu_default", "cpu_realistic", "cpu_calibrated"]
    )
    parser.add_argument("--reference", default="cpu_default")
    parser.add_argument(
        "--real", type=pathlib.Path, default=ROOT.parent / "shared/data/real_ecg_dev"
    )
    parser.add_argument("--ptbxl-data-dir", default=os.environ.get("PTBXL_DATA_DIR"))
    parser.add_argument("--ptbxl-config", default=None)
    parser.add_argument("--workdirs", type=pathlib.Path, default=ROOT / "runs" / "calibration")
    parser.add_argument("--data-dir", type=pathlib.Path, default=ROOT / "data" / "tfds")
    parser.add_argument("--sizes", nargs="+", default=["100", "400"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--render-only", action="store_true", help="regenerate <out>.md")
    parser.add_argument(
        "--update-doc",
        type=pathlib.Path,
        default=None,
        help="also replace the block 'transfer' of this markdown file (e.g. docs/data.md)",
    )
    args = parser.parse_args()
    if args.render_only:
        result = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(render(result))
        if args.update_doc is not None:
            replace_doc_block(args.update_doc, "transfer", render(result))
        return

    from pclr_jax.embedding.embedder import load_encoder
    from pclr_jax.evaluation.supervised import random_init_embeddings
    from pclr_jax.evaluation.transfer import transfer_evaluation

    sizes = [s if s == "all" else int(s) for s in args.sizes]
    timings, encoders, synthetic = {}, {}, {}
    for name in args.configs:
        workdir = args.workdirs / name
        timings[f"train_{name}_s"] = train_if_missing(name, workdir, args.data_dir)
        encoders[name] = load_encoder(workdir / "encoder", output="embed")
        synthetic[name] = synthetic_rows(workdir)
    model_config = next(iter(encoders.values())).config
    for name, encoder in encoders.items():
        if encoder.config != model_config:
            raise ValueError(f"{name}'s encoder has another architecture than the first")

    evaluations = {}
    sets = []
    start = time.time()
    table, records = real_ecg_table(args.real)
    sets.append(("real_ecg_dev", table, prepare(records, model_config.n_samples), REAL_TASKS))
    timings["read_real_ecg_dev_s"] = time.time() - start
    if args.ptbxl_data_dir:
        index, ecgs = prepared_split(
            args.ptbxl_data_dir, "ptbxl", "test", args.ptbxl_config, model_config.n_samples
        )
        tasks = [
            t for t in ("female:binary", "age:regression", "af:binary") if t.split(":")[0] in index
        ]
        sets.append(("ptbxl_fold10", index, ecgs, tuple(tasks)))
    for set_name, frame, ecgs, tasks in sets:
        start = time.time()
        sources = {"random_init": random_init_embeddings(model_config, ecgs, seed=args.seed + 1)}
        sources.update({name: enc.embed(ecgs) for name, enc in encoders.items()})
        timings[f"embed_{set_name}_s"] = time.time() - start
        start = time.time()
        rows = transfer_evaluation(
            sources,
            frame,
            tasks,
            reference=args.reference if args.reference in sources else None,
            sizes=sizes,
            repeats=args.repeats,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            progress=None,
        )
        timings[f"evaluate_{set_name}_s"] = time.time() - start
        counts = frame["patient_id"].value_counts()
        evaluations[set_name] = {
            "data": {
                "ecgs": len(frame),
                "patients": int(counts.size),
                "multi_ecg_patients": int((counts >= 2).sum()),
                "retrieval_queries": int(counts[counts >= 2].sum()),
                "tasks": list(tasks),
            },
            "rows": json.loads(rows.to_json(orient="records")),
        }
        print(f"\n{set_name}:\n{rows.to_string()}", flush=True)
    result = {
        "configs": list(args.configs),
        "reference": args.reference,
        "workdirs": {n: os.path.relpath(args.workdirs / n, ROOT) for n in args.configs},
        "real": os.path.relpath(args.real, ROOT),
        "steps": {
            n: json.loads((args.workdirs / n / "summary.json").read_text())["step"]
            for n in args.configs
        },
        "random_init_seed": args.seed + 1,
        "probe_sizes": [str(s) for s in sizes],
        "repeats": args.repeats,
        "bootstrap": args.bootstrap,
        "synthetic": synthetic,
        "evaluations": evaluations,
        "timings_s": timings,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    text = render(result)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        pd.concat([pd.DataFrame(e["rows"]).assign(set=n) for n, e in evaluations.items()]).to_csv(
            args.out.with_suffix(".csv"), index=False
        )
        args.out.with_suffix(".md").write_text(text)
    if args.update_doc is not None:
        replace_doc_block(args.update_doc, "transfer", text)


if __name__ == "__main__":
    main()
