"""One-shot accelerator check: what ``benchmarks/accelerator_check.sh`` runs.

On a machine with a GPU or TPU (sized for about 8 minutes), in order, each step in child
processes so that this one never holds device memory:

1. the device: JAX's platform, device kind and count, and XLA's measured matrix-product peak
   (fp32 and bf16) on one device;
2. the equivalence tests of the step and the losses (sharded step = single-device reference,
   sharded and chunked losses = their references, gradient caching = autodiff) run ON the device
   (``PCLR_TEST_DEVICE=1``; the suite otherwise pins itself to the CPU);
3. the largest training batch that fits on one device, per dtype, from XLA's memory plan
   (:mod:`pclr_jax.benchmarking.fit`);
4. ``pclr bench train`` in bf16 and fp32 at two per-device batch sizes (half the largest and the
   largest), and ``pclr bench embed``; the PyTorch peer on the same device at the smaller
   size and for the embedding, where an interpreter with a CUDA torch is found
   (``PCLR_PEER_PYTHON_TORCH``, else this one);
5. one summary, ``accelerator_check.json`` + ``accelerator_check.md``: ECG/s, achieved GFLOP/s,
   fraction of the device's published dense bf16 peak (:data:`PUBLISHED_BF16_TFLOPS`) and of
   XLA's measured peak, peak device memory, host RSS, test results.

``--tiny`` (or ``PCLR_CHECK_TINY=1``) runs the same steps at test sizes on whatever JAX finds,
the CPU included, in well under a minute: the suite runs it end to end. A step that fails or
times out is recorded with its error and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

from pclr_jax.benchmarking import report, runner

REPO = pathlib.Path(__file__).resolve().parents[2]

# Published dense (no sparsity) bf16 peak per device, TFLOP/s, from the vendors' datasheets
# (NVIDIA H100/H200/A100/L4/L40S/B200 datasheets; Google Cloud TPU system architecture pages).
# Matched against JAX's ``device_kind`` lower-cased, first match wins (specific names first).
PUBLISHED_BF16_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),  # SXM
    ("gh200", 989.0),
    ("h200 nvl", 835.0),
    ("h200", 989.0),  # SXM
    ("b200", 2250.0),
    ("a100", 312.0),
    ("l40s", 362.0),
    ("l4", 121.0),
    ("tpu v4", 275.0),
    ("tpu v5 lite", 197.0),  # v5e
    ("tpu v5e", 197.0),
    ("tpu v5", 459.0),  # v5p
    ("tpu v6 lite", 918.0),  # v6e (Trillium)
    ("tpu v6e", 918.0),
)

ACCELERATOR_TESTS = (
    "tests/test_train_step.py",
    "tests/test_losses_sharded.py",
    "tests/test_losses.py",
    "tests/test_gradcache.py",
)
TINY_TESTS = ("tests/test_losses.py::test_ntxent_matches_ml4h_simclr_loss",)


def published_bf16_tflops(device_kind: str) -> float | None:
    kind = device_kind.lower()
    return next((peak for name, peak in PUBLISHED_BF16_TFLOPS if name in kind), None)


def _sizes(tiny: bool) -> dict:
    if tiny:
        return dict(config="tiny", start_pairs=2, max_pairs=4, embed=8, steps=2, warmup=0, peak=128)
    return dict(
        config="full", start_pairs=32, max_pairs=8192, embed=512, steps=5, warmup=2, peak=8192
    )


class Check:
    """Runs the steps, records each as ``{'status': 'ok'|'failed'|'timeout', ...}``."""

    def __init__(self, out: pathlib.Path, tiny: bool):
        self.out, self.tiny, self.sizes = out, tiny, _sizes(tiny)
        self.env = runner.child_env(str(REPO))
        self.env["PCLR_TEST_DEVICE"] = "1"  # tests/conftest.py: run on JAX's default backend
        self.env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "jax_cache"))
        self.steps: dict[str, dict] = {}

    def log(self, text: str) -> None:
        print(f"[accelerator_check] {text}", file=sys.stderr, flush=True)

    def run(self, name: str, command: list[str], timeout: float) -> subprocess.CompletedProcess:
        self.log(f"{name}: {' '.join(command[:8])}{' ...' if len(command) > 8 else ''}")
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=self.env, cwd=REPO, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            self.steps[name] = {"status": "timeout", "seconds": timeout}
            return None
        seconds = time.perf_counter() - start
        (self.out / f"{name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        status = "ok" if done.returncode == 0 else "failed"
        self.steps[name] = {"status": status, "seconds": round(seconds, 1)}
        if status == "failed":
            self.steps[name]["error"] = "\n".join(done.stderr.strip().splitlines()[-8:])
        return done

    def device(self) -> dict:
        done = self.run(
            "device",
            [sys.executable, "-m", "pclr_jax.benchmarking.peaks", f"--size={self.sizes['peak']}"],
            300,
        )
        return json.loads(done.stdout.strip().splitlines()[-1]) if done and done.stdout else {}

    def tests(self, selection: tuple[str, ...]) -> dict:
        xml = self.out / "tests.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
        self.run("tests", [*command, f"--junitxml={xml}", *selection], 240 if self.tiny else 300)
        if not xml.exists():
            return {"selection": list(selection)}
        suite = ElementTree.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        failed = [
            f"{case.get('classname')}::{case.get('name')}"
            for case in suite.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        return {"selection": list(selection), **counts, "failed": failed}

    def largest_batches(self) -> dict:
        s = self.sizes
        command = [sys.executable, "-m", "pclr_jax.benchmarking.fit", f"--config={s['config']}"]
        command += ["--dtype=bf16", "--dtype=fp32", f"--start-pairs={s['start_pairs']}"]
        done = self.run("largest_batch", [*command, f"--max-pairs={s['max_pairs']}"], 420)
        return json.loads(done.stdout.strip().splitlines()[-1]) if done and done.stdout else {}

    def bench(self, name: str, args: list[str], torch_python: str | None) -> dict | None:
        s = self.sizes
        path = self.out / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "pclr_jax.commands.cli",
            "bench",
            *args,
            f"--config={s['config']}",
        ]
        command += [f"--steps={s['steps']}", f"--warmup={s['warmup']}", "--peak-size=0"]
        if torch_python:
            command += ["--vs", "torch", "--peer-python", f"torch={torch_python}"]
        self.run(name, [*command, f"--json={path}"], 300)
        return json.loads(path.read_text()) if path.exists() else None


def torch_on(platform: str, env: dict) -> tuple[str | None, str]:
    """An interpreter whose torch runs on ``platform`` (``PCLR_PEER_PYTHON_TORCH`` or this one),
    or None with the reason."""
    python = os.environ.get("PCLR_PEER_PYTHON_TORCH") or sys.executable
    if platform not in ("cpu", "gpu"):
        return None, f"no PyTorch peer on {platform}"
    if python == sys.executable and importlib.util.find_spec("torch") is None:
        return None, "torch is not installed (pip install 'pclr-jax[peers-torch]', a CUDA build)"
    probe = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None, f"{python} cannot import torch"
    if platform == "gpu" and done.stdout.strip() != "True":
        return None, f"the torch of {python} has no CUDA (a CPU wheel)"
    return python, ""


def summarize_bench(result: dict, device_peaks: dict, published: float | None) -> list[dict]:
    """Rows of a ``pclr bench`` JSON with the fractions of peak filled in (module docstring)."""
    dtype = result["settings"]["dtype"]
    rows = []
    for row in result["rows"]:
        gflops = row["gflop_per_s"]
        measured = device_peaks.get(dtype)
        rows.append(
            {
                "workload": result["settings"]["workload"],
                "dtype": dtype,
                "batch": result["rows"][0]["ecgs_per_step"],
                "contender": row["contender"],
                "framework": row["framework"],
                "ecg_per_s": row["ecg_per_s"],
                "gflop_per_s": gflops,
                "of_published_bf16_peak": gflops / (published * 1e3)
                if gflops and published
                else None,
                "of_measured_xla_peak": gflops / measured if gflops and measured else None,
                "device_peak_gib": None
                if row["device_peak_mib"] is None
                else row["device_peak_mib"] / 1024,
                "host_rss_gib": row["maxrss_mib"] / 1024,
                "compile_s": row["compile_s"],
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(summary: dict) -> str:
    device = summary["device"]
    lines = [
        "# pclr-jax accelerator check",
        "",
        f"{summary['date_utc']}, {'TINY sizes (a test run)' if summary['tiny'] else 'full sizes'}"
        f"; host {summary['host']['cpu_model']}, {summary['host']['cores']} cores.",
        "",
        f"Device: {device.get('device_count')} x {device.get('device_kind')} "
        f"({device.get('platform')}), JAX {device.get('jax')}. Published dense bf16 peak: "
        f"{_fmt(summary['published_bf16_tflops'], '.0f')} TFLOP/s; XLA's measured matmul peak "
        f"on one device: fp32 {_fmt(device.get('peaks', {}).get('fp32'), '.0f')}, bf16 "
        f"{_fmt(device.get('peaks', {}).get('bf16'), '.0f')} GFLOP/s.",
        "",
    ]
    tests = summary["tests"]
    if "tests" in tests:
        lines.append(
            f"Tests on the device ({', '.join(tests['selection'])}): {tests['tests']} run, "
            f"{tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped."
        )
        lines += [f"- FAILED {name}" for name in tests["failed"]]
    else:
        lines.append("Tests on the device: no result (see the steps below).")
    lines.append("")
    for dtype, fit in summary["largest_batch"].items():
        lines.append(
            f"Largest training batch on one device, {dtype}: {fit['pairs']} pairs (XLA plans "
            f"{fit['planned_gib']:.1f} of {fit['available_gib']:.1f} GiB available; "
            f"{fit['fixed_gib']:.2f} GiB + {fit['per_pair_gib'] * 1024:.1f} MiB per pair)."
        )
    lines += [
        "",
        "| workload | dtype | batch (ECGs) | contender | ECG/s | GFLOP/s | of bf16 peak | "
        "of XLA peak | device peak (GiB) | host RSS (GiB) | compile (s) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['workload']} | {r['dtype']} | {r['batch']} | {r['contender']} | "
            f"{r['ecg_per_s']:.4g} | {_fmt(r['gflop_per_s'], '.0f')} | "
            f"{_fmt(r['of_published_bf16_peak'], '.1%')} | "
            f"{_fmt(r['of_measured_xla_peak'], '.0%')} | {_fmt(r['device_peak_gib'], '.2f')} | "
            f"{r['host_rss_gib']:.2f} | {r['compile_s']:.1f} |"
        )
    lines += ["", f"PyTorch peer: {summary['torch_peer']}", "", "| step | status | seconds |"]
    lines.append("|---|---|---:|")
    for name, step in summary["steps"].items():
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("accelerator_check"))
    parser.add_argument(
        "--tiny", action="store_true", default=os.environ.get("PCLR_CHECK_TINY") == "1"
    )
    parser.add_argument(
        "--tests", nargs="*", default=None, help="pytest selection (default: the equivalence tests)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out.resolve(), args.tiny)
    started = time.perf_counter()
    device = check.device()
    selection = (
        tuple(args.tests)
        if args.tests is not None
        else (TINY_TESTS if args.tiny else ACCELERATOR_TESTS)
    )
    tests = check.tests(selection) if selection else {"selection": []}
    fits = check.largest_batches()
    platform = device.get("platform", "cpu")
    torch_python, torch_note = torch_on(platform, check.env)
    published = published_bf16_tflops(device.get("device_kind", ""))
    rows = []
    for dtype in ("bf16", "fp32"):
        largest = fits.get(dtype, {}).get("pairs", 0)
        for pairs in sorted({max(largest // 2, 1), largest}) if largest else ():
            peer = torch_python if pairs < largest or largest == 1 else None
            args_ = ["train", f"--batch-pairs={pairs}", f"--dtype={dtype}"]
            result = check.bench(f"train_{dtype}_{pairs}", args_, peer)
            rows += summarize_bench(result, device.get("peaks", {}), published) if result else []
    embed = check.bench(
        "embed_fp32", ["embed", f"--batch-size={check.sizes['embed']}"], torch_python
    )
    rows += summarize_bench(embed, device.get("peaks", {}), published) if embed else []
    summary = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny": args.tiny,
        "host": report.machine_facts(),
        "device": device,
        "published_bf16_tflops": published,
        "tests": tests,
        "largest_batch": fits,
        "torch_peer": torch_python or torch_note,
        "rows": rows,
        "steps": check.steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "accelerator_check.json").write_text(json.dumps(summary, indent=2))
    (args.out / "accelerator_check.md").write_text(markdown(summary))
    print(markdown(summary))
    check.log(f"wrote {args.out / 'accelerator_check.json'} and .md in {summary['seconds']:.0f} s")
    failed = [name for name, step in check.steps.items() if step["status"] != "ok"]
    failed += ["tests"] if tests.get("failures") or tests.get("errors") else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
