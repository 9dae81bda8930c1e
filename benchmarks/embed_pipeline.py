"""Embedding a cohort end to end, from WFDB files to a table: what to run before choosing.

On generated folders of WFDB records (500 Hz, 10 s, 12 leads, format 16 at 1,000 units/mV, as
PTB-XL's ``records500``; ``--sizes`` records each, hot in the page cache after writing) and a
random-weight ``.h5`` of the released 12-lead architecture (headless, 320-d), it runs, as the
user would, each in its own process and interleaved (every contender on a size before the next
size; ``--repeats`` rounds):

* ``serial``: today's serial path, the code of ``pclr embed`` before the pipeline
  (``Encoder.embed_records`` over ``iter_input_files``, then one ``to_csv``);
* ``pipeline-N``: ``pclr embed --workers N`` for N = 1, 2 and all usable cores;
* ``ml4h``: ml4h's own workflow (``benchmarks/peers/ml4h_embed.py``: ``wfdb.rdsamp``,
  ``np.interp`` of each lead to 4,096 samples, tf.keras ``load_model`` + ``model.predict``, with
  oneDNN), with the interpreter of ``--ml4h-python`` (an environment with TensorFlow, tf-keras
  and wfdb: the ``peers-tf`` extra).

For each: **end-to-end ECG/s** (records / wall seconds of the whole command, start-up included),
the **steady rate** (start-up excluded: the difference from a run on ``--startup-records``
records), the **peak memory** of the process and its reader processes (the largest sum of their
proportional set sizes, ``Pss`` of ``/proc/<pid>/smaps_rollup``, sampled every 0.5 s, so shared
libraries count once; and the main process's own ``VmHWM``), and the largest difference of its
table from the serial one (same ids in the same order, checked).

Bounds, measured alone in the same run:

* **model-only**: ``Encoder.embed`` on random ``(N, 4096, 12)`` input (all cores), ECG/s and CPU
  seconds per ECG, at the contenders' batch (the one the bound uses) and at ``pclr bench embed``'s
  64;
* **read-only**: reading + preparing (``prepare_chunk``, what a reader process does) with 0
  (in this process), 1, 2, 4 ... usable-cores reader processes, no model: ECG/s, and CPU seconds
  per ECG in-process;
* the **CPU-work bound** = cores / (model CPU s per ECG + read CPU s per ECG): the rate if every
  core did only this work all the time. Each contender's fraction of it is reported.

Usage, the measurement (idle machine; 20,000 records are 2.4 GB of disk; about 40 min on 2
cores with the defaults)::

    python benchmarks/embed_pipeline.py --sizes 2000 20000 \\
        --ml4h-python ~/venvs/peer_tf/bin/python --json benchmarks/results/embed_pipeline.json

A smoke test (a minute): ``--sizes 40 80 --startup-records 8 --model-ecgs 16 --read-records 40``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
ML4H_PEER = ROOT / "benchmarks" / "peers" / "ml4h_embed.py"
TEMPLATES = 64  # distinct generated ECGs; record i is a copy of template i % TEMPLATES
RESULT = "RESULT "  # prefix of a role's one JSON line on stdout
SAMPLE_S = 0.5
BENCH_EMBED_BATCH = 64  # `pclr bench embed`'s batch: the model-only rate is also taken there


# ----------------------------------------------------------------- roles (child processes)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def role_weights(path: str) -> None:
    """A random-weight ``.h5`` of the released 12-lead architecture without head (320-d)."""
    import jax

    from pclr_jax.model.encoder import EncoderConfig, init_variables
    from pclr_jax.weights.keras_export import write_keras_h5

    config = EncoderConfig(head_sizes=())
    write_keras_h5(path, config, init_variables(config, jax.random.key(0)))


def role_serial(weights: str, folder: str, output: str, batch_size: int) -> None:
    """Today's serial path: read, prepare and embed in one loop, then one table."""
    import pandas as pd

    from pclr_jax import load_encoder
    from pclr_jax.signals.records import ArrayOptions, input_files, iter_input_files

    encoder = load_encoder(weights, batch_size=batch_size)
    records = iter_input_files(input_files([folder]), ArrayOptions())
    result = encoder.embed_records(records)
    columns = [f"latent_{i}" for i in range(encoder.embed_dim)]
    frame = pd.DataFrame(result.embeddings, columns=columns)
    frame.insert(0, "sample_id", result.sample_ids)
    frame.to_csv(output, index=False)


def role_model(weights: str, n: int, batch_size: int) -> None:
    """Model-only rate: ``Encoder.embed`` on ``n`` random ECGs after one warm-up batch."""
    from pclr_jax import load_encoder

    encoder = load_encoder(weights, batch_size=batch_size)
    ecgs = np.random.default_rng(0).normal(0, 0.3, (n, 4096, 12)).astype(np.float32)
    encoder.embed(ecgs[:batch_size])
    wall, cpu = time.perf_counter(), cpu_seconds()
    encoder.embed(ecgs)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(RESULT + json.dumps({"ecg_per_s": n / wall, "cpu_s_per_ecg": cpu / n}))


def role_read(folder: str, workers: int, limit: int) -> None:
    """Read-only rate: the first ``limit`` records read and prepared by ``workers`` processes."""
    from pclr_jax.embedding.inputs import FileSource
    from pclr_jax.embedding.pipeline import chunk_tasks, prepared_chunks
    from pclr_jax.embedding.plan import Plan
    from pclr_jax.embedding.reading import InputSpec
    from pclr_jax.signals.leads import STANDARD_LEADS
    from pclr_jax.signals.records import input_files

    source = FileSource(input_files([folder])[:limit])
    plan = Plan(source.counts, part_records=max(1, int(source.counts.sum())))  # parts: irrelevant
    tasks = [t for part in range(plan.n_parts) for t in chunk_tasks(source, plan, part)]
    spec = InputSpec(4096, STANDARD_LEADS)
    wall, cpu = time.perf_counter(), cpu_seconds()
    n = sum(chunk.n_records for chunk in prepared_chunks(spec, tasks, workers))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(RESULT + json.dumps({"ecg_per_s": n / wall, "cpu_s_per_ecg": cpu / n, "records": n}))


# ----------------------------------------------------------------- the cohort


def write_cohort(folder: pathlib.Path, n: int, templates: pathlib.Path) -> None:
    """``n`` WFDB records ``records500/NNNNN/NNNNN_hr`` (copies of the templates under new
    names), written once: a folder with its ``.complete`` marker is reused."""
    if (folder / ".complete").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    names = sorted(p.stem for p in templates.glob("*.hea"))
    headers = {name: (templates / f"{name}.hea").read_text() for name in names}
    for i in range(n):
        name = names[i % len(names)]
        record = f"{i:05d}_hr"
        target = folder / "records500" / f"{i // 1000:05d}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(templates / f"{name}.dat", target / f"{record}.dat")
        (target / f"{record}.hea").write_text(headers[name].replace(name, record))
    (folder / ".complete").write_text(f"{n} records\n")


def write_templates(directory: pathlib.Path) -> None:
    """``TEMPLATES`` synthetic 12-lead ECGs (pclr-jax's generator) as WFDB records at 500 Hz."""
    if (directory / ".complete").exists():
        return
    import wfdb

    from pclr_jax.data.builders.pclr_synthetic import render_patients
    from pclr_jax.data.synthetic.config import SyntheticConfig
    from pclr_jax.signals.leads import STANDARD_LEADS

    directory.mkdir(parents=True, exist_ok=True)
    config = SyntheticConfig(n_patients=TEMPLATES, ecgs_per_patient=(1, 1), n_samples=5000)
    ecgs, _ = render_patients(config, np.arange(TEMPLATES))
    for i, ecg in enumerate(ecgs):
        wfdb.wrsamp(
            f"template{i:03d}",
            fs=500,
            units=["mV"] * 12,
            sig_name=list(STANDARD_LEADS),
            p_signal=ecg.astype(np.float64),
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(directory),
        )
    (directory / ".complete").write_text("done\n")


# ----------------------------------------------------------------- measuring a child


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _status_kib(pid: int, key: str, file: str = "status") -> int:
    try:
        text = pathlib.Path(f"/proc/{pid}/{file}").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def run_child(command: list[str], env: dict, log: pathlib.Path) -> dict:
    """Runs ``command``; its wall seconds, peak memory (MiB) and ``RESULT`` line, if any."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak_pss = peak_hwm = 0
        while proc.poll() is None:
            tree = _tree(proc.pid)
            peak_pss = max(peak_pss, sum(_status_kib(p, "Pss", "smaps_rollup") for p in tree))
            peak_hwm = max(peak_hwm, _status_kib(proc.pid, "VmHWM"))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{text[-3000:]}")
    result = [
        json.loads(line[len(RESULT) :]) for line in text.splitlines() if line.startswith(RESULT)
    ]
    return {
        "wall_s": wall,
        "peak_pss_mib": peak_pss / 1024,
        "main_hwm_mib": peak_hwm / 1024,
        **(result[-1] if result else {}),
    }


def child_env() -> dict:
    """This environment with one XLA CPU device (which uses every core): no faked devices."""
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.pop("XLA_FLAGS", ""))
    if flags.strip():
        env["XLA_FLAGS"] = flags.strip()
    return env


# ----------------------------------------------------------------- the run


def contender_commands(args, cores: int, weights: str) -> dict:
    """Name -> ``(folder, output) -> command``, in the order they run."""
    python = sys.executable

    def io(folder: str, output: str) -> list[str]:
        return ["--weights", weights, "--input", folder, "--output", output]

    batch = ["--batch-size", str(args.batch_size)]
    commands = {
        "serial": lambda d, o: [python, __file__, "serial", weights, d, o, batch[1]],
    }
    cli = [python, "-m", "pclr_jax.commands.cli", "embed"]
    for workers in sorted({1, 2, cores}):
        commands[f"pipeline-{workers}"] = lambda d, o, w=workers: [
            *cli,
            *io(d, o),
            *batch,
            "--workers",
            str(w),
        ]
    if args.ml4h_python:
        commands["ml4h"] = lambda d, o: [args.ml4h_python, str(ML4H_PEER), *io(d, o), *batch]
    return commands


def table_difference(path: pathlib.Path, reference: pathlib.Path) -> float:
    """Largest absolute difference of two tables with the same ids in the same order."""
    import pandas as pd

    table, expected = pd.read_csv(path), pd.read_csv(reference)
    if table["sample_id"].astype(str).tolist() != expected["sample_id"].astype(str).tolist():
        raise RuntimeError(f"{path} and {reference} do not hold the same ids in the same order")
    return float(np.abs(table.iloc[:, 1:].to_numpy() - expected.iloc[:, 1:].to_numpy()).max())


def read_worker_counts(cores: int) -> list[int]:
    """0 (in this process), then 1, 2, 4 ... up to the usable cores."""
    counts, n = [0], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, cores]


def measure(args) -> dict:
    from pclr_jax.benchmarking.report import machine_facts
    from pclr_jax.runtime.pool import usable_cpus

    cores = usable_cpus()
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="pclr_embed_bench_"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env()
    facts = machine_facts()
    load = facts["load_average_1min"]
    print(f"{facts['cpu_model']}, {cores} cores, load {load:.1f}; in {work}", flush=True)
    write_templates(work / "templates")
    sizes = sorted(args.sizes)
    folders = {n: work / f"cohort_{n}" for n in [args.startup_records, *sizes]}
    for n, folder in folders.items():
        write_cohort(folder, n, work / "templates")
    weights = work / "pclr_random.h5"
    if not weights.exists():
        run_child([sys.executable, __file__, "weights", str(weights)], env, logs / "weights.log")
    script = [sys.executable, __file__]
    model_rates = {
        batch: run_child(
            [*script, "model", str(weights), str(args.model_ecgs), str(batch)],
            env,
            logs / f"model_{batch}.log",
        )
        for batch in sorted({args.batch_size, BENCH_EMBED_BATCH})
    }
    model = model_rates[args.batch_size]
    read = {
        workers: run_child(
            [*script, "read", str(folders[sizes[0]]), str(workers), str(args.read_records)],
            env,
            logs / f"read_{workers}.log",
        )
        for workers in read_worker_counts(cores)
    }
    bound = cores / (model["cpu_s_per_ecg"] + read[0]["cpu_s_per_ecg"])
    commands = contender_commands(args, cores, str(weights))
    outputs = work / "outputs"
    outputs.mkdir(exist_ok=True)
    startup = {
        name: run_child(
            command(str(folders[args.startup_records]), str(outputs / f"{name}-s.csv")),
            env,
            logs / f"{name}_startup.log",
        )
        for name, command in commands.items()
    }
    runs: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in sizes} for name in commands}
    for round_ in range(args.repeats):
        for n in sizes:
            for name, command in commands.items():
                output = outputs / f"{name}-{n}.csv"
                result = run_child(
                    command(str(folders[n]), str(output)), env, logs / f"{name}_{n}_{round_}.log"
                )
                result["max_abs_diff"] = table_difference(output, outputs / f"serial-{n}.csv")
                runs[name][n].append(result)
                print(
                    f"{name} on {n:,}: {n / result['wall_s']:.1f} ECG/s end to end, peak "
                    f"{result['peak_pss_mib'] / 1024:.2f} GiB",
                    flush=True,
                )
    facts["load_average_1min_after"] = os.getloadavg()[0]
    framework = next((r.get("framework") for r in startup.values() if r.get("framework")), None)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "embed_pipeline",
        "machine": {**facts, "usable_cores": cores},
        "ml4h_framework": framework,
        "batch_size": args.batch_size,
        "startup_records": args.startup_records,
        "model_only": model,
        "model_only_by_batch": {str(batch): r for batch, r in model_rates.items()},
        "read_only": {str(k): v for k, v in read.items()},
        "cpu_work_bound_ecg_per_s": bound,
        "startup": startup,
        "runs": {name: {str(n): v for n, v in by_size.items()} for name, by_size in runs.items()},
    }


def report(result: dict) -> str:
    """The Markdown tables of a result (see the module docstring for the definitions)."""
    bound, n0 = result["cpu_work_bound_ecg_per_s"], result["startup_records"]
    model, read = result["model_only"], result["read_only"]
    machine = result["machine"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, load "
        f"{machine['load_average_1min']:.1f} before / {machine['load_average_1min_after']:.1f} "
        f"after; JAX {machine['jax']}; ml4h peer: {result['ml4h_framework'] or 'not run'}.",
        "",
        "| alone | ECG/s | CPU s per ECG |",
        "|---|---:|---:|",
    ]
    by_batch = result.get("model_only_by_batch", {str(result["batch_size"]): model})
    for batch, r in sorted(by_batch.items(), key=lambda item: int(item[0])):
        used = " (the contenders')" if int(batch) == result["batch_size"] else ""
        lines.append(
            f"| model only (Encoder.embed, batch {batch}{used}, all cores) | "
            f"{r['ecg_per_s']:.1f} | {r['cpu_s_per_ecg']:.4f} |"
        )
    one = read.get("1", read["0"])["ecg_per_s"]
    for workers, r in read.items():
        label = "in process" if workers == "0" else f"{workers} reader process(es)"
        scale = "" if workers == "0" else f" ({r['ecg_per_s'] / one:.2f}x 1 reader)"
        lines.append(
            f"| read only, {label} | {r['ecg_per_s']:.1f}{scale} | {r['cpu_s_per_ecg']:.4f} |"
        )
    lines += [
        "",
        f"CPU-work bound: {machine['usable_cores']} cores / ({model['cpu_s_per_ecg']:.4f} + "
        f"{read['0']['cpu_s_per_ecg']:.4f}) CPU s per ECG = **{bound:.1f} ECG/s**.",
        "",
        "| contender | records | ECG/s end to end | steady ECG/s | of CPU-work bound (end to end / "
        "steady) | vs serial | peak PSS (GiB) | main process peak (GiB) | max abs diff vs serial |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    serial_walls = {
        n: statistics.median(r["wall_s"] for r in runs)
        for n, runs in result["runs"]["serial"].items()
    }
    for name, by_size in result["runs"].items():
        start = result["startup"][name]["wall_s"]
        for n, runs in by_size.items():
            wall = statistics.median(r["wall_s"] for r in runs)
            rate, steady = int(n) / wall, (int(n) - n0) / max(wall - start, 1e-9)
            lines.append(
                f"| {name} | {int(n):,} | {rate:.1f} | {steady:.1f} | {rate / bound:.0%} / "
                f"{steady / bound:.0%} | {serial_walls[n] / wall:.2f}x | "
                f"{max(r['peak_pss_mib'] for r in runs) / 1024:.2f} | "
                f"{max(r['main_hwm_mib'] for r in runs) / 1024:.2f} | "
                f"{max(r['max_abs_diff'] for r in runs):.1e} |"
            )
    sizes = sorted(int(n) for n in result["runs"]["serial"])
    if len(sizes) > 1:
        small, large = str(sizes[0]), str(sizes[-1])
        lines += [
            "",
            f"| contender | peak PSS at {int(small):,} (GiB) | at {int(large):,} | ratio |",
            "|---|---:|---:|---:|",
        ]
        for name, by_size in result["runs"].items():
            a = max(r["peak_pss_mib"] for r in by_size[small]) / 1024
            b = max(r["peak_pss_mib"] for r in by_size[large]) / 1024
            lines.append(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return "\n".join(lines)


def main() -> None:
    roles = {"weights": role_weights, "serial": role_serial, "model": role_model, "read": role_read}
    if len(sys.argv) > 1 and sys.argv[1] in roles:
        types = {
            "serial": (str, str, str, int),
            "model": (str, int, int),
            "read": (str, int, int),
            "weights": (str,),
        }[sys.argv[1]]
        roles[sys.argv[1]](*[kind(value) for kind, value in zip(types, sys.argv[2:], strict=True)])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="records")
    parser.add_argument(
        "--startup-records",
        type=int,
        default=64,
        help="records of the run that measures each contender's start-up",
    )
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=32, help="every contender's batch")
    parser.add_argument("--model-ecgs", type=int, default=512, help="ECGs of the model-only run")
    parser.add_argument(
        "--read-records", type=int, default=2000, help="records of each read-only run"
    )
    parser.add_argument("--ml4h-python", help="an interpreter with TensorFlow, tf-keras and wfdb")
    parser.add_argument(
        "--work-dir",
        help="where the cohorts are generated (kept with --keep, "
        "and reused when complete); default: a temporary folder",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    args = parser.parse_args()
    if args.ml4h_python:
        check = subprocess.run(
            [args.ml4h_python, str(ML4H_PEER), "--help"], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise SystemExit(
                f"--ml4h-python {args.ml4h_python} cannot run the ml4h peer:\n"
                f"{check.stderr[-2000:]}"
            )
    result = measure(args)
    print("\n" + report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
