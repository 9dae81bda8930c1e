"""Transfer to real ECGs as a calibration criterion: the default job trained on each synthetic
config, its encoder applied to real ECGs, side by side with a randomly initialised encoder.

    python scripts/calibrate_transfer.py --configs cpu_default cpu_realistic cpu_calibrated \
        --seeds 0 1 --real ../shared/data/real_ecg_dev --workdirs runs/calibration \
        --out docs/calibration/transfer

For every config and training seed ``k`` (``--seeds``): ``<workdirs>/<config>/seed<k>/encoder`` is
used if it exists, else the default job (``train.py --config=configs/default.py
--config.data.config=<config> --config.seed=<k>``, run with ``nice``) trains it there first, so an
interrupted calibration resumes where it stopped (``--train-only``: train what is missing, stop).
The real ECGs (``--real``, a folder in the layout of ``shared/data/real_ecg_dev``: ``records.csv``
+ WFDB records) are read, one copy per recording (:func:`real_ecg_table`), prepared as ``pclr
embed`` prepares them (``ml4h`` resampling to the encoder's input) and embedded by every encoder
and by randomly initialised ones of the same architecture (one per training seed, initialisation
seed ``--seed + 1 + k``). Optionally the test split of a prepared PTB-XL (``--ptbxl-data-dir``,
from ``pclr prepare ptbxl``: strat_fold 10) is evaluated the same way.

Reported: patient retrieval top-1/top-5 among all the real ECGs and linear probes at a few label
sizes with repeats (:func:`pclr_jax.evaluation.transfer.transfer_items`; the probes of training
seed ``k`` draw their splits with seed ``--seed + k * --repeats``, the same for every encoder),
each as the mean over the training seeds with an interval that covers the seeds and the real test
set (:func:`seed_summary`), every encoder's difference to ``--reference``, the synthetic test
split's own figures from each job's ``summary.json`` (LVH AUROC of PCLR and of random init), and
the default-job criteria of docs/data.md checked for every config (:func:`criteria`).

Writes ``<out>.json`` (everything, raw), ``<out>.csv`` (the long table), ``<out>_seeds.csv``
(every seed's values) and ``<out>.md`` (tables generated from the JSON; ``--render-only``
regenerates them from an existing JSON).
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


def train_if_missing(
    config_name: str, workdir: pathlib.Path, data_dir: pathlib.Path, seed: int = 0
) -> float:
    """Runs the default job on ``config_name`` with training seed ``seed`` into ``workdir`` unless
    its encoder exists; returns the seconds it took (0 when it existed)."""
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
        f"--config.seed={seed}",
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


SUMMARY_COLUMNS = (
    "source",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "seed_sd",
    "test_sd",
    "seeds",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "diff_p",
    "n",
)
# The default-job criteria of docs/data.md (written before the runs they judge).
LVH_RANDOM_MAX = 0.95
SYNTHETIC_RETRIEVAL_MAX = 0.95


def seed_summary(
    metric_rows: dict,
    items_by_seed: dict[int, dict],
    reference: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Every source's metrics as the mean over training seeds, with an interval that covers the
    seeds and the real test set, and its difference to ``reference``.

    Args:
        metric_rows: metric -> :class:`~pclr_jax.evaluation.transfer.MetricRows`.
        items_by_seed: training seed -> metric -> source -> ``TransferItems`` (from
            :func:`~pclr_jax.evaluation.transfer.transfer_items` on that seed's encoders, with
            that seed's probe splits).
        reference: the source every other is compared with.
        n_bootstrap, seed: the common patient resamples of each metric's rows.

    Method (``pclr_jax.study.two_source``, the project's seeds-then-patients interval): per
    metric, every (source, training seed) cell is recomputed under the same ``n_bootstrap``
    patient resamples of the real ECGs (:func:`~pclr_jax.evaluation.transfer.common_deviations`);
    the interval of a source's mean over S seeds combines the spread of its per-seed values (t
    with S - 1 degrees of freedom: training seed, and for probes the probe split) with the
    test-set noise the seeds share (the covariance of different seeds' deviations under a common
    resample). A difference to ``reference`` pairs the two sources' runs of the same training
    seed index (the same initialisation seed and the same probe splits; the runs are otherwise
    independent, so the pairing is valid but gains little) and their deviations under the same
    resamples, and takes the same interval of the per-seed differences.

    Returns ``(rows, seed_rows)``: ``rows`` with :data:`SUMMARY_COLUMNS` (NaN bounds with one
    seed), one per (source, metric), plus ``chance`` rows for retrieval; ``seed_rows`` the value
    of every (source, seed, metric).
    """
    from pclr_jax.evaluation.transfer import common_deviations
    from pclr_jax.study.two_source import two_source_interval

    rows, seed_rows = [], []
    for metric, where in metric_rows.items():
        cells = {
            (source, k): items
            for k, by_metric in items_by_seed.items()
            for source, items in by_metric.get(metric, {}).items()
        }
        deviations = common_deviations(where, cells, n_bootstrap, seed, metric)
        ones = np.ones((1, len(where.patients)))
        values = {key: float(cell.value(ones)[0]) for key, cell in cells.items()}
        sources = list(dict.fromkeys(source for source, _ in cells))
        for source in sources:
            seeds = [k for k in items_by_seed if (source, k) in cells]
            seed_rows += [
                {"source": source, "seed": k, "metric": metric, "value": values[(source, k)]}
                for k in seeds
            ]
            own = two_source_interval(
                [values[(source, k)] for k in seeds],
                np.stack([deviations[(source, k)] for k in seeds], axis=1),
            )
            row = dict.fromkeys(SUMMARY_COLUMNS, float("nan"))
            row.update(
                source=source,
                metric=metric,
                value=own.mean,
                ci_low=own.low,
                ci_high=own.high,
                seed_sd=own.sd,
                test_sd=own.test_sd,
                seeds=len(seeds),
                n=where.n,
            )
            if reference is not None and source != reference:
                paired = [k for k in seeds if (reference, k) in cells]
                if paired:
                    diff = two_source_interval(
                        [values[(source, k)] - values[(reference, k)] for k in paired],
                        np.stack(
                            [deviations[(source, k)] - deviations[(reference, k)] for k in paired],
                            axis=1,
                        ),
                    )
                    row.update(
                        diff=diff.mean,
                        diff_ci_low=diff.low,
                        diff_ci_high=diff.high,
                        diff_p=diff.p_value,
                    )
            rows.append(row)
        if np.isfinite(where.chance):
            row = dict.fromkeys(SUMMARY_COLUMNS, float("nan"))
            row.update(source="chance", metric=metric, value=where.chance, n=where.n)
            rows.append(row)
    return rows, seed_rows


def _number(value, digits: int = 3, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", "−") if sign else text


def _cell(row: dict) -> str:
    if row["value"] is None or not np.isfinite(row["value"]):
        return ""
    text = f"{row['value']:.3f}"
    if row["ci_low"] is not None and np.isfinite(row["ci_low"]):
        text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    if row["diff"] is not None and np.isfinite(row["diff"]):
        text += f" ({_number(row['diff'], sign=True)}"
        if row["diff_ci_low"] is not None and np.isfinite(row["diff_ci_low"]):
            text += f" [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"
        text += ")"
    return text


def _difference(row: dict) -> str:
    if row["diff"] is None or not np.isfinite(row["diff"]):
        return ""
    text = _number(row["diff"], sign=True)
    if row["diff_ci_low"] is not None and np.isfinite(row["diff_ci_low"]):
        text += f" [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"
    return text


def _synthetic_mean(result: dict, config: str, source: str, metric: str) -> float:
    values = [
        rows.get(source, {}).get(metric, float("nan"))
        for rows in result["synthetic"][config].values()
    ]
    return float(np.mean(values)) if values else float("nan")


def criteria(result: dict, evaluation: str = "real_ecg_dev") -> list[dict]:
    """The default-job criteria of docs/data.md for every config, from a result JSON:

    * ``lvh``: on the synthetic test split, random-init LVH AUROC <= ``LVH_RANDOM_MAX`` and
      PCLR's above it (means over the training seeds);
    * ``synthetic_retrieval``: PCLR's synthetic retrieval top-1 <= ``SYNTHETIC_RETRIEVAL_MAX``
      (the in-domain task not saturated, the reason the default job left ``cpu_default``);
    * ``real_retrieval``: real retrieval top-1 at or above the reference's (mean paired difference
      >= 0);
    * ``probes``: the probe cells (every task and size) at least as good as the reference's: their
      mean paired difference >= 0 and none resolved below it (two-source interval below 0).
    """
    reference = result["reference"]
    rows = result["evaluations"][evaluation]["rows"]
    out = []
    for config in result["configs"]:
        if not result["synthetic"].get(config):
            continue  # no run of this config (--skip-missing)
        lvh_random = _synthetic_mean(result, config, "random_init", "lvh_auroc")
        lvh_pclr = _synthetic_mean(result, config, "pclr", "lvh_auroc")
        retrieval = _synthetic_mean(result, config, "pclr", "retrieval_top1")
        mine = {r["metric"]: r for r in rows if r["source"] == config}
        real = mine["retrieval_top1"]
        probes = {m: r for m, r in mine.items() if not m.startswith("retrieval")}
        diffs = [r["diff"] for r in probes.values() if r["diff"] is not None]
        below = [m for m, r in probes.items() if (r["diff_ci_high"] or 0) < 0]
        entry = {
            "config": config,
            "lvh_random": lvh_random,
            "lvh_pclr": lvh_pclr,
            "lvh": bool(lvh_random <= LVH_RANDOM_MAX and lvh_pclr > lvh_random),
            "synthetic_retrieval_top1": retrieval,
            "synthetic_retrieval": bool(retrieval <= SYNTHETIC_RETRIEVAL_MAX),
        }
        if config != reference:
            entry.update(
                real_retrieval_diff=real["diff"],
                real_retrieval_ci=(real["diff_ci_low"], real["diff_ci_high"]),
                real_retrieval=bool(real["diff"] >= 0),
                probe_mean_diff=float(np.mean(diffs)),
                probe_cells=len(diffs),
                probe_cells_at_or_above=int(sum(d >= 0 for d in diffs)),
                probe_cells_resolved_below=below,
                probes=bool(np.mean(diffs) >= 0 and not below),
            )
            entry["meets_all"] = all(
                entry[k] for k in ("lvh", "synthetic_retrieval", "real_retrieval", "probes")
            )
        out.append(entry)
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def criteria_table(result: dict) -> str:
    """The markdown table of :func:`criteria`."""
    reference = result["reference"]
    lines = [
        f"| config | random-init LVH AUROC <= {LVH_RANDOM_MAX} | PCLR LVH above it "
        f"| PCLR synthetic retrieval top-1 <= {SYNTHETIC_RETRIEVAL_MAX} "
        f"| real retrieval top-1 − {reference} >= 0 "
        f"| probe cells: mean difference >= 0 | probe cells >= {reference} "
        "| probe cells resolved below | all met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in criteria(result):
        cells = [
            f"`{c['config']}`",
            f"{c['lvh_random']:.3f} {_yes(c['lvh_random'] <= LVH_RANDOM_MAX)}",
            f"{c['lvh_pclr']:.3f} {_yes(c['lvh_pclr'] > c['lvh_random'])}",
            f"{c['synthetic_retrieval_top1']:.3f} {_yes(c['synthetic_retrieval'])}",
        ]
        if c["config"] == reference:
            cells += ["(reference)"] * 4 + ["(reference)"]
        else:
            low, high = c["real_retrieval_ci"]
            cells += [
                f"{_number(c['real_retrieval_diff'], sign=True)} [{_number(low, sign=True)}, "
                f"{_number(high, sign=True)}] {_yes(c['real_retrieval'])}",
                f"{_number(c['probe_mean_diff'], sign=True)} {_yes(c['probe_mean_diff'] >= 0)}",
                f"{c['probe_cells_at_or_above']} of {c['probe_cells']}",
                ", ".join(c["probe_cells_resolved_below"]) or "none",
                _yes(c["meets_all"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(result: dict) -> str:
    """The markdown report of a result JSON (tables generated from its numbers)."""
    configs = result["configs"]
    seeds = result["seeds"]
    sources = ["random_init", *configs, "chance"]
    parts = []
    for name, evaluation in result["evaluations"].items():
        info = evaluation["data"]
        rows = evaluation["rows"]
        cells = {(r["metric"], r["source"]): _cell(r) for r in rows}
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        present = [s for s in sources if any(r["source"] == s for r in rows)]
        lines = [
            "| metric | " + " | ".join(present) + " |",
            "| --- |" + " --- |" * len(present),
        ]
        for metric in metrics:
            lines.append(
                f"| {metric} | " + " | ".join(cells.get((metric, s), "") for s in present) + " |"
            )
        by_seed = {
            (r["metric"], r["source"], r["seed"]): r["value"] for r in evaluation["seed_rows"]
        }
        seed_lines = [
            f"| metric (seed {' / '.join(str(k) for k in seeds)}) | "
            + " | ".join(present[:-1])
            + " |",
            "| --- |" + " --- |" * (len(present) - 1),
        ]
        for metric in metrics:
            seed_lines.append(
                f"| {metric} | "
                + " | ".join(
                    " / ".join(_number(by_seed.get((metric, s, k), float("nan"))) for k in seeds)
                    for s in present[:-1]
                )
                + " |"
            )
        contrasts = evaluation.get("contrasts", {})
        contrast_lines = []
        if contrasts:
            names = list(contrasts)
            contrast_lines = [
                "| metric | "
                + " | ".join(f"{n.split(':')[0]} − {n.split(':')[1]}" for n in names)
                + " |",
                "| --- |" + " --- |" * len(names),
            ]
            cells = {(r["metric"], n): _difference(r) for n in names for r in contrasts[n]}
            for metric in metrics:
                if any((metric, n) in cells for n in names):
                    contrast_lines.append(
                        f"| {metric} | "
                        + " | ".join(cells.get((metric, n), "") for n in names)
                        + " |"
                    )
            contrast_lines.append(
                "| mean over the probe cells | "
                + " | ".join(
                    _number(
                        np.mean(
                            [r["diff"] for r in contrasts[n] if not r["metric"].startswith("retr")]
                        ),
                        sign=True,
                    )
                    for n in names
                )
                + " |"
            )
        parts.append(
            f"**{name}**: {info['ecgs']} ECGs of {info['patients']} patients "
            f"({info['retrieval_queries']} retrieval queries from the "
            f"{info['multi_ecg_patients']} patients with 2+ ECGs); training seeds "
            f"{', '.join(str(k) for k in seeds)}. Mean over the training seeds [95 % interval "
            "over the seeds and the real ECGs' patients] (difference to "
            f"`{result['reference']}` [interval]):\n\n"
            + "\n".join(lines)
            + "\n\nPer training seed:\n\n"
            + "\n".join(seed_lines)
            + (
                "\n\nContrasts (the same intervals, paired by training seed and patients):\n\n"
                + "\n".join(contrast_lines)
                if contrast_lines
                else ""
            )
        )
    lines = [
        "| synthetic test split (the job's own report; seed "
        + " / ".join(str(k) for k in seeds)
        + ") | "
        + " | ".join(f"{c} PCLR | {c} random" for c in configs)
        + " |",
        "| --- |" + " --- | --- |" * len(configs),
    ]
    for metric in SYNTHETIC_METRICS:
        cells = []
        for config in configs:
            per_seed = result["synthetic"].get(config, {})
            cells += [
                " / ".join(
                    _number(per_seed.get(f"seed{k}", {}).get(source, {}).get(metric, float("nan")))
                    for k in seeds
                )
                for source in ("pclr", "random_init")
            ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    parts.append(
        "Default-job criteria (docs/data.md; synthetic: means over the training seeds; real: "
        f"`real_ecg_dev`, differences to `{result['reference']}`):\n\n" + criteria_table(result)
    )
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
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    parser.add_argument("--reference", default="cpu_default")
    parser.add_argument(
        "--contrast",
        nargs="*",
        default=[],
        metavar="CONFIG:OTHER",
        help="also report CONFIG's differences to OTHER (e.g. a candidate to the config it varies)",
    )
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
    parser.add_argument("--train-only", action="store_true", help="train what is missing, stop")
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="train nothing: leave out the (config, seed) runs without an encoder (listed in the"
        " JSON as 'missing'); a config keeps the seeds it has",
    )
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
    from pclr_jax.evaluation.transfer import transfer_items

    sizes = [s if s == "all" else int(s) for s in args.sizes]
    timings, encoders, synthetic, steps = {}, {}, {}, {}
    missing = []
    for name in args.configs:
        for k in args.seeds:
            workdir = args.workdirs / name / f"seed{k}"
            if args.skip_missing and not (workdir / "encoder").exists():
                missing.append(f"{name}/seed{k}")
                continue
            timings[f"train_{name}_seed{k}_s"] = train_if_missing(
                name, workdir, args.data_dir, seed=k
            )
    if args.train_only:
        return
    for name in args.configs:
        for k in args.seeds:
            workdir = args.workdirs / name / f"seed{k}"
            if f"{name}/seed{k}" in missing:
                continue
            encoders[(name, k)] = load_encoder(workdir / "encoder", output="embed")
            synthetic.setdefault(name, {})[f"seed{k}"] = synthetic_rows(workdir)
            steps.setdefault(name, {})[f"seed{k}"] = json.loads(
                (workdir / "summary.json").read_text()
            )["step"]
    model_config = next(iter(encoders.values())).config
    for key, encoder in encoders.items():
        if encoder.config != model_config:
            raise ValueError(f"{key}'s encoder has another architecture than the first")

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
        items_by_seed, metric_rows = {}, {}
        for k in args.seeds:
            start = time.time()
            sources = {
                "random_init": random_init_embeddings(model_config, ecgs, seed=args.seed + 1 + k)
            }
            sources.update(
                {
                    name: encoders[(name, k)].embed(ecgs)
                    for name in args.configs
                    if (name, k) in encoders
                }
            )
            timings[f"embed_{set_name}_seed{k}_s"] = time.time() - start
            start = time.time()
            metric_rows, items_by_seed[k] = transfer_items(
                sources,
                frame,
                tasks,
                sizes=sizes,
                repeats=args.repeats,
                seed=args.seed + k * args.repeats,
            )
            timings[f"probe_{set_name}_seed{k}_s"] = time.time() - start
        start = time.time()
        rows, seed_rows = seed_summary(
            metric_rows,
            items_by_seed,
            reference=args.reference if args.reference in args.configs else None,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
        )
        contrasts = {}
        for contrast in args.contrast:
            config, other = contrast.split(":")
            paired, _ = seed_summary(
                metric_rows,
                {
                    k: {m: {c: by[c] for c in (config, other) if c in by} for m, by in v.items()}
                    for k, v in items_by_seed.items()
                },
                reference=other,
                n_bootstrap=args.bootstrap,
                seed=args.seed,
            )
            contrasts[contrast] = [r for r in paired if r["source"] == config]
        timings[f"intervals_{set_name}_s"] = time.time() - start
        counts = frame["patient_id"].value_counts()
        evaluations[set_name] = {
            "data": {
                "ecgs": len(frame),
                "patients": int(counts.size),
                "multi_ecg_patients": int((counts >= 2).sum()),
                "retrieval_queries": int(counts[counts >= 2].sum()),
                "tasks": list(tasks),
            },
            "rows": json.loads(pd.DataFrame(rows).to_json(orient="records")),
            "seed_rows": seed_rows,
            "contrasts": {
                n: json.loads(pd.DataFrame(r).to_json(orient="records"))
                for n, r in contrasts.items()
            },
        }
        print(f"\n{set_name}:\n{pd.DataFrame(rows).to_string()}", flush=True)
    result = {
        "configs": list(args.configs),
        "seeds": list(args.seeds),
        "reference": args.reference,
        "workdirs": {
            n: [os.path.relpath(args.workdirs / n / f"seed{k}", ROOT) for k in args.seeds]
            for n in args.configs
        },
        "missing": missing,
        "real": os.path.relpath(args.real, ROOT),
        "steps": steps,
        "random_init_seeds": [args.seed + 1 + k for k in args.seeds],
        "probe_seeds": [args.seed + k * args.repeats for k in args.seeds],
        "probe_sizes": [str(s) for s in sizes],
        "repeats": args.repeats,
        "bootstrap": args.bootstrap,
        "synthetic": synthetic,
        "criteria": None,
        "evaluations": evaluations,
        "timings_s": timings,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    result["criteria"] = criteria(result)
    text = render(result)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        pd.concat([pd.DataFrame(e["rows"]).assign(set=n) for n, e in evaluations.items()]).to_csv(
            args.out.with_suffix(".csv"), index=False
        )
        pd.concat(
            [pd.DataFrame(e["seed_rows"]).assign(set=n) for n, e in evaluations.items()]
        ).to_csv(args.out.with_name(args.out.name + "_seeds.csv"), index=False)
        args.out.with_suffix(".md").write_text(text)
    if args.update_doc is not None:
        replace_doc_block(args.update_doc, "transfer", text)


if __name__ == "__main__":
    main()
