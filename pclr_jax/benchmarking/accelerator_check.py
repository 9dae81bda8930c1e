"""One-shot accelerator check: what ``benchmarks/accelerator_check.sh`` runs.

On a machine with a GPU or TPU, sized to finish in about 8 minutes on one H100 (the estimate and
how it was made: ``docs/benchmarks.md``), the stages of :data:`STAGES`, in this order:

1. ``device``: JAX's platform, device kind and count, the memory one device can allocate, and
   XLA's measured fp32/bf16 matrix-product peak on one device (8192^3, made on the device);
2. ``tests``: the equivalence tests that matter on a device, ``pytest -m device_check`` over
   :data:`DEVICE_CHECK_FILES`, run ON the device (``PCLR_TEST_PLATFORM`` set to the platform the
   ``device`` stage found; tests that need more devices than there are are skipped with the
   reason); the platform the tests ran on is read back from the junit XML;
3. ``train_bf16``, ``train_fp32``: the training step at 32 pairs, the largest batch that fits on
   one device (XLA's memory plan, each probe reported as compiled) and the step at that batch;
4. ``embed``: the embedding program on 512 ECGs generated on the device, bf16 and fp32;
5. optional: ``conv_formulations_bf16`` / ``_fp32`` (the convolution formulations timed on the
   device and the ``conv_impl="auto"`` table entry they call for,
   :mod:`pclr_jax.benchmarking.conv_choice`), ``torch_peer`` (``pclr bench --vs torch`` where an
   interpreter with a CUDA PyTorch is found: ``PCLR_PEER_PYTHON_TORCH``, else this one).

Each stage runs in a child process (:mod:`pclr_jax.benchmarking.check_worker`, or pytest), so
this process never holds device memory and a stage that dies takes nothing else with it.
``accelerator_check.json`` (and ``.md``) is rewritten atomically after every stage and every
result a stage streams (each probe, each row): a machine taken away mid-run leaves every stage
done so far, and ``"complete": false``. ``--budget-s`` (default 450 at full size) stops starting
stages: one whose estimate (:attr:`Stage.estimate_s`, seconds on one H100) exceeds the time left
is skipped with the reason, and a running stage is stopped 30 s past the budget (what it
streamed is kept), so the check ends within 8 minutes.

Summary fields: ``date_utc``, ``tiny``, ``budget_s``, ``host`` (CPU, cores, ...), ``device``,
``published_bf16_tflops``, ``tests`` (counts, failed and skipped names, ``ran_on``),
``largest_batch`` per dtype, ``rows`` (one per timed program: ECG/s, GFLOP/s from the analytic
FLOP count, fractions of the published and measured peaks, device peak memory, compile time,
finite outputs), ``conv_formulations`` (timings, ``choice``, the current ``table`` entry),
``peer_rows``, ``stages`` (per stage: ``status`` running/ok/failed/timeout/skipped, ``seconds``,
``estimate_s``, ``compiles`` and ``compile_s`` counted in its process, ``reason`` or ``error``),
``seconds`` and ``complete``.

``--tiny`` (or ``PCLR_CHECK_TINY=1``) runs the same stages at test sizes on whatever JAX finds,
the CPU included (no budget unless given), with the ``tests`` stage cut to
:data:`TINY_DEVICE_CHECK_FILES`: ``tests/test_accelerator_check.py`` runs it end to end and kills
it mid-run. The exit status is 1 if a stage failed or timed out, or a test failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree

from pclr_jax.benchmarking import check_report, report, runner
from pclr_jax.benchmarking.peaks import published_bf16_tflops

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_BUDGET_S = 450.0
GRACE_S = 30.0  # a running stage is stopped this long past the budget: 8 min at most
STAGE_TIMEOUT_S = 900.0  # without a budget
DEVICE_CHECK_FILES = (
    "tests/test_accelerator_check.py",
    "tests/test_conv_impl.py",
    "tests/test_losses.py",
    "tests/test_losses_sharded.py",
    "tests/test_train_step.py",
    "tests/test_gradcache.py",
)
# What ``--tiny`` runs of them: the platform read-back and two loss tests. The whole selection
# on 8 CPU devices is the test suite's own job, and on one device its ``test_accelerator_check``.
TINY_DEVICE_CHECK_FILES = ("tests/test_accelerator_check.py", "tests/test_losses.py")


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage: its ``name``, ``estimate_s`` (seconds on one H100 at full size, from the compile
    counts of a tiny run: docs/benchmarks.md), the :mod:`check_worker` arguments that run it
    (None: run here, ``tests`` and ``torch_peer``) and whether it is ``optional``."""

    name: str
    estimate_s: float
    worker: tuple[str, ...] | None = None
    optional: bool = False


STAGES = (
    Stage("device", 30, ("device",)),
    Stage("tests", 90, None),
    Stage("train_bf16", 100, ("train", "--dtype=bf16")),
    Stage("train_fp32", 100, ("train", "--dtype=fp32")),
    Stage("embed", 35, ("embed", "--dtype=bf16", "--dtype=fp32")),
    Stage("conv_formulations_bf16", 90, ("conv_formulations", "--dtype=bf16"), optional=True),
    Stage("conv_formulations_fp32", 90, ("conv_formulations", "--dtype=fp32"), optional=True),
    Stage("torch_peer", 120, None, optional=True),
)


def log(text: str) -> None:
    print(f"[accelerator_check] {text}", file=sys.stderr, flush=True)


class Check:
    """Runs the stages and keeps the summary (module docstring) written after every change."""

    def __init__(
        self,
        out: pathlib.Path,
        tiny: bool,
        budget_s: float,
        allow_cpu: bool,
        stages: tuple[Stage, ...] = STAGES,
    ):
        self.out, self.tiny, self.budget_s, self.allow_cpu = out, tiny, budget_s, allow_cpu
        self.stages = stages
        self.env = runner.child_env(str(REPO))
        self.started = time.perf_counter()
        self.summary: dict = {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tiny": tiny,
            "budget_s": budget_s or None,
            "host": report.machine_facts(),
            "device": {},
            "published_bf16_tflops": None,
            "tests": {},
            "largest_batch": {},
            "rows": [],
            "conv_formulations": {},
            "peer_rows": [],
            "stages": {s.name: {"status": "pending", "estimate_s": s.estimate_s} for s in stages},
            "seconds": 0.0,
            "complete": False,
        }

    # ------------------------------------------------------------------ the summary on disk
    def save(self) -> None:
        self.summary["seconds"] = round(time.perf_counter() - self.started, 1)
        text = json.dumps(self.summary, indent=2)
        check_report.write_atomic(self.out / "accelerator_check.json", text)
        check_report.write_atomic(
            self.out / "accelerator_check.md", check_report.markdown(self.summary)
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    # ------------------------------------------------------------------ stages
    def run(self) -> None:
        for stage in self.stages:
            record = self.summary["stages"][stage.name]
            reason = self.reason_to_skip(stage)
            if reason:
                record.update(status="skipped", reason=reason)
                log(f"{stage.name}: skipped ({reason})")
                self.save()
                continue
            record["status"] = "running"
            self.save()
            log(f"{stage.name}: started (estimate {stage.estimate_s:.0f} s on one H100)")
            start = time.perf_counter()
            timeout = self.timeout()
            if stage.worker is not None:
                outcome = self.worker(stage, timeout)
            elif stage.name == "tests":
                outcome = self.tests(timeout)
            else:
                outcome = self.torch_peer(timeout)
            record.update(outcome, seconds=round(time.perf_counter() - start, 1))
            log(f"{stage.name}: {record['status']} in {record['seconds']} s")
            if (
                stage.name.startswith("conv_formulations")
                and "line" in self.summary["conv_formulations"]
            ):
                log(self.summary["conv_formulations"]["line"])
            self.save()
        self.summary["complete"] = True
        self.save()

    def reason_to_skip(self, stage: Stage) -> str | None:
        device = self.summary["device"]
        if stage.name != "device" and not device:
            return "the device stage gave no result"
        if device.get("platform") == "cpu" and not (self.tiny or self.allow_cpu):
            return (
                "JAX found no GPU or TPU (platform cpu): install jax[cuda12] (INSTALL=1 bash "
                "benchmarks/accelerator_check.sh) or pass --allow-cpu"
            )
        if self.budget_s:
            left = self.budget_s - self.elapsed()
            if left < stage.estimate_s:
                return (
                    f"budget: {left:.0f} s of --budget-s {self.budget_s:.0f} left, the stage's "
                    f"estimate is {stage.estimate_s:.0f} s"
                )
        return None

    def timeout(self) -> float:
        if self.budget_s:
            return max(self.budget_s - self.elapsed(), 0.0) + GRACE_S
        return STAGE_TIMEOUT_S

    def child(self, name: str, command: list[str], timeout: float, env: dict, on_line) -> dict:
        """Runs ``command``, handing each stdout line to ``on_line``; stderr to ``NAME.log``.
        Returns the stage's status (and the error's last lines)."""
        with open(self.out / f"{name}.log", "w") as stderr:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO
            )
            expired = threading.Event()

            def stop() -> None:
                expired.set()
                process.kill()

            timer = threading.Timer(timeout, stop)
            timer.start()
            try:
                for line in process.stdout:
                    on_line(line)
                code = process.wait()
            finally:
                timer.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
                process.stdout.close()
        if expired.is_set():
            return {"status": "timeout", "error": f"stopped after {timeout:.0f} s"}
        if code != 0:
            tail = (self.out / f"{name}.log").read_text().strip().splitlines()[-8:]
            return {"status": "failed", "error": "\n".join(tail) or f"exit status {code}"}
        return {"status": "ok"}

    def worker(self, stage: Stage, timeout: float) -> dict:
        command = [sys.executable, "-m", "pclr_jax.benchmarking.check_worker", *stage.worker]
        command += ["--tiny"] if self.tiny else []
        record = self.summary["stages"][stage.name]

        def on_line(line: str) -> None:
            if line.startswith("{"):
                self.on_event(stage.name, record, json.loads(line))
                self.save()

        return self.child(stage.name, command, timeout, self.env, on_line)

    def on_event(self, name: str, record: dict, event: dict) -> None:
        """Files one streamed result of a worker into the summary."""
        kind = event.pop("event")
        if kind == "device":
            self.summary["device"] = event
            self.summary["published_bf16_tflops"] = published_bf16_tflops(event["device_kind"])
        elif kind == "row":
            peaks = self.summary["device"].get("peaks", {})
            published = self.summary["published_bf16_tflops"]
            self.summary["rows"].append(check_report.with_fractions(event, peaks, published))
        elif kind == "probe":
            record.setdefault("probes", []).append(event)
        elif kind == "largest":
            self.summary["largest_batch"][event.pop("dtype")] = event
        elif kind == "timing":
            self.add_timing(event)
        elif kind == "done":
            record.update(event)

    def add_timing(self, timing: dict) -> None:
        from pclr_jax.benchmarking.conv_choice import suggest_entry
        from pclr_jax.model.conv import AUTO_FALLBACK, AUTO_IMPL

        conv = self.summary["conv_formulations"]
        backend = self.summary["device"].get("platform", "cpu")
        conv.setdefault("timings", []).append(timing)
        conv["backend"] = backend
        conv["table"] = list(AUTO_IMPL.get(backend, AUTO_FALLBACK))
        conv["choice"] = suggest_entry(conv["timings"])
        conv["line"] = (
            f"conv_impl 'auto' on {backend}: AUTO_IMPL[{backend!r}] = "
            f"{(conv['choice']['training'], conv['choice']['inference'])!r} "
            f"(pclr_jax/model/conv.py now has {tuple(conv['table'])!r})"
        )

    def tests(self, timeout: float) -> dict:
        xml = self.out / "tests.xml"
        counts_path = self.out / "tests_compiles.json"
        for path in (xml, counts_path):
            path.unlink(missing_ok=True)
        env = {
            **self.env,
            "PCLR_TEST_PLATFORM": self.summary["device"]["platform"],
            "PCLR_COMPILES_OUT": str(counts_path),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
        command += ["-p", "pclr_jax.benchmarking.compiles", "-m", "device_check"]
        command += ["-o", "junit_family=xunit1"]  # keeps record_property's ran_on
        selection = TINY_DEVICE_CHECK_FILES if self.tiny else DEVICE_CHECK_FILES
        command += [f"--junitxml={xml}", *selection]
        with open(self.out / "tests.out", "w") as output:
            outcome = self.child("tests", command, timeout, env, output.write)
        tests = read_junit(xml) if xml.exists() else {}
        self.summary["tests"] = {"selection": list(selection), **tests}
        ran_on = tests.get("ran_on", {}).get("jax_platform")
        if outcome["status"] == "ok" and ran_on != self.summary["device"]["platform"]:
            outcome = {"status": "failed", "error": f"the tests ran on {ran_on}, not the device"}
        elif outcome["status"] == "failed" and tests.get("tests"):
            outcome["error"] = f"{tests['failures'] + tests['errors']} test(s) failed"
        if counts_path.exists():
            outcome.update(json.loads(counts_path.read_text()))
        return outcome

    def torch_peer(self, timeout: float) -> dict:
        platform = self.summary["device"]["platform"]
        python, reason = torch_on(platform, self.env)
        if python is None:
            return {"status": "skipped", "reason": reason}
        size = "tiny" if self.tiny else "full"
        runs = [
            ("train", ["train", "--batch-pairs=2" if self.tiny else "--batch-pairs=32"]),
            ("embed", ["embed", "--batch-size=8" if self.tiny else "--batch-size=512"]),
        ]
        outcome: dict = {"status": "ok"}
        for workload, args in runs:
            path = self.out / f"torch_peer_{workload}.json"
            command = [sys.executable, "-m", "pclr_jax.commands.cli", "bench", *args]
            command += [f"--config={size}", "--dtype=bf16", "--steps=5", "--warmup=2"]
            command += ["--peak-size=0", "--vs", "torch", "--peer-python", f"torch={python}"]
            done = self.child(
                f"torch_peer_{workload}", [*command, f"--json={path}"], timeout, self.env, _ignore
            )
            if done["status"] != "ok":
                outcome = done
                continue
            for row in json.loads(path.read_text())["rows"]:
                self.summary["peer_rows"].append({"workload": workload, "dtype": "bf16", **row})
        return outcome


def _ignore(line: str) -> None:
    """A child's stdout that the summary does not need (its JSON file has the results)."""


def read_junit(path: pathlib.Path) -> dict:
    """Counts, failed and skipped test names (with the reasons) and the ``ran_on`` properties
    (``jax_platform``, ``device_count``, ``device_kind``) a test recorded, from a junit XML."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed, skipped, ran_on = [], {}, {}
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        if case.find("skipped") is not None:
            skipped[name] = case.find("skipped").get("message", "")
        for prop in case.iter("property"):
            ran_on[prop.get("name")] = prop.get("value")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "failed": failed, "skipped_reasons": skipped, "ran_on": ran_on}


def torch_on(platform: str, env: dict) -> tuple[str | None, str]:
    """An interpreter whose torch runs on ``platform`` (``PCLR_PEER_PYTHON_TORCH`` or this one),
    or None with the reason."""
    python = os.environ.get("PCLR_PEER_PYTHON_TORCH") or sys.executable
    if platform not in ("cpu", "gpu"):
        return None, f"no PyTorch peer on {platform}"
    probe = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None, f"{python} cannot import torch (pip install 'pclr-jax[peers-torch]')"
    if platform == "gpu" and done.stdout.strip() != "True":
        return None, f"the torch of {python} has no CUDA (a CPU wheel)"
    return python, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("accelerator_check"))
    parser.add_argument(
        "--tiny", action="store_true", default=os.environ.get("PCLR_CHECK_TINY") == "1"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"start no stage whose estimate exceeds the time left (default {DEFAULT_BUDGET_S:.0f}"
        " at full size, none in --tiny; 0: none)",
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run at full size where JAX finds only the CPU"
    )
    args = parser.parse_args(argv)
    budget = args.budget_s if args.budget_s is not None else (0 if args.tiny else DEFAULT_BUDGET_S)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out.resolve(), args.tiny, budget, args.allow_cpu)
    check.run()
    summary = check.summary
    print(check_report.markdown(summary))
    if summary["conv_formulations"].get("line"):
        print(summary["conv_formulations"]["line"])
    log(f"wrote {args.out / 'accelerator_check.json'} and .md in {summary['seconds']:.0f} s")
    statuses = [stage["status"] for stage in summary["stages"].values()]
    tests = summary["tests"]
    failed = any(s in ("failed", "timeout") for s in statuses)
    failed |= bool(tests.get("failures") or tests.get("errors"))
    failed |= summary["device"].get("platform") == "cpu" and not (args.tiny or args.allow_cpu)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
