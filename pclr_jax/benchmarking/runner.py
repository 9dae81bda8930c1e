"""Runs the contenders of ``pclr bench`` in subprocesses, interleaved, and collects their results.

Every contender (pclr-jax itself, and each ``--vs`` peer) is a process speaking
:mod:`pclr_jax.benchmarking.protocol`. By default they run INTERLEAVED: each is started in turn
and set up (compiled, warmed up) while the others wait idle, then the timed steps alternate
A, B, C, A, B, C, ... so that a change in the machine's load hits all of them alike, and the
speed-up is the median over rounds of the per-round ratio of step times. Each contender's turn
in a round starts with ``rewarm`` untimed steps (default 1): a process's first step after the
others have run can be far slower than its next ones (on a VM with free-page reporting, memory
a process freed and left idle for a few seconds is handed back to the host, and faulting it in
again costs seconds: docs/benchmarks.md), which would land in the timed step of whichever
framework frees and re-allocates its temporaries. All contenders are alive at once, so their
memory adds up; ``sequential=True`` runs them one after the other instead (each its warm-up and
all its steps), for sizes that do not fit together.

Peers are scripts in ``benchmarks/peers/`` run by a configurable interpreter (their frameworks
usually live in other virtual environments). A peer whose framework cannot be imported exits
with ``MISSING_EXIT_CODE`` and an install hint, raised here as :class:`PeerUnavailable`.

On one accelerator: pclr-jax starts first and reports its device; each peer is then started with
``--device`` set to it, and a peer that cannot run there (a CPU-only PyTorch beside a GPU JAX)
or reports another device stops the run (:class:`DeviceMismatch`): a GPU is never compared with
a CPU peer. JAX's preallocation of most of the GPU's memory is turned off in the children
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, TensorFlow's memory growth on), so contenders that are
alive together share the device; the matrix-product peak is measured in a child of its own
(:func:`measure_peaks`), so ``pclr bench`` itself never holds device memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from pclr_jax.benchmarking.memory import DoesNotFit
from pclr_jax.benchmarking.protocol import (
    DEVICE_EXIT_CODE,
    DOES_NOT_FIT_EXIT_CODE,
    MISSING_EXIT_CODE,
)

SELF = "pclr_jax"
PEERS_DIR = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "peers"


@dataclasses.dataclass(frozen=True)
class Peer:
    script: str
    mode: str
    module: str  # what must be importable
    install: str


PEERS = {
    "torch": Peer(
        "torch_pclr.py",
        "eager",
        "torch",
        "pip install torch==2.13.0 numpy (CPU wheel), or pip install 'pclr-jax[peers-torch]'",
    ),
    "torch_compile": Peer(
        "torch_pclr.py",
        "compile",
        "torch",
        "pip install torch==2.13.0 numpy (CPU wheel), or pip install 'pclr-jax[peers-torch]'",
    ),
    "tf_keras": Peer(
        "tf_keras_pclr.py",
        "",
        "tensorflow",
        'pip install "tensorflow==2.21.*" "tf-keras==2.21.*" numpy, or pip install '
        "'pclr-jax[peers-tf]'",
    ),
}


class PeerUnavailable(RuntimeError):
    """A peer's framework cannot be imported by its interpreter."""


class ModelMismatch(RuntimeError):
    """A contender built a model with a different parameter count: the comparison is refused."""


class DeviceMismatch(RuntimeError):
    """A peer cannot run, or did not run, on the device pclr-jax runs on."""


class ContenderFailed(RuntimeError):
    """A contender process died or broke the protocol."""


@dataclasses.dataclass
class Contender:
    name: str
    command: list[str]
    env: dict[str, str]
    peer: Peer | None = None


def child_env(extra_path: str | None = None) -> dict[str, str]:
    """This environment without faked host devices (one XLA CPU device uses every core), with
    JAX's GPU preallocation off and TensorFlow's GPU memory growth on (unless set already), so
    that contenders alive at the same time share one accelerator."""
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    env["PCLR_BENCH_PROTOCOL"] = str(pathlib.Path(__file__).with_name("protocol.py"))
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    if flags.strip():
        env["XLA_FLAGS"] = flags.strip()
    else:
        env.pop("XLA_FLAGS", None)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH", "")) if p)
    return env


def make_contenders(
    workload_args: list[str],
    peers: list[str],
    peer_python: dict[str, str] | None = None,
    peers_dir: pathlib.Path = PEERS_DIR,
    self_args: list[str] | None = None,
) -> list[Contender]:
    """pclr-jax first, then ``peers`` (names of :data:`PEERS`), each with ``workload_args``
    (pclr-jax also with ``self_args``: options only it has, like ``--devices``).

    ``peer_python`` maps a peer name (or its framework module, e.g. ``torch``) to an interpreter;
    the default is this one (``sys.executable``).
    """
    peer_python = peer_python or {}
    package_root = str(pathlib.Path(__file__).resolve().parents[2])
    contenders = [
        Contender(
            SELF,
            [
                sys.executable,
                "-m",
                "pclr_jax.benchmarking.workloads",
                *workload_args,
                *(self_args or []),
            ],
            child_env(package_root),
        )
    ]
    for name in peers:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
        peer = PEERS[name]
        python = peer_python.get(name) or peer_python.get(peer.module) or sys.executable
        script = peers_dir / peer.script
        if not script.exists():
            raise FileNotFoundError(f"peer script {script} not found (see --peers-dir)")
        mode = ["--mode", peer.mode] if peer.mode else []
        contenders.append(
            Contender(name, [python, str(script), *workload_args, *mode], child_env(), peer)
        )
    return contenders


def measure_peaks(size: int, repeats: int = 5) -> dict:
    """XLA's matrix-product peaks (``{'fp32': GFLOP/s, 'bf16': ...}`` under ``peaks``, empty for
    ``size`` 0) and the device facts of :mod:`pclr_jax.benchmarking.peaks`, from a child."""
    package_root = str(pathlib.Path(__file__).resolve().parents[2])
    command = [sys.executable, "-m", "pclr_jax.benchmarking.peaks", f"--size={size}"]
    out = subprocess.run(
        [*command, f"--repeats={repeats}"],
        capture_output=True,
        text=True,
        env=child_env(package_root),
    )
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise ContenderFailed(
            f"the matrix-product peak child exited with {out.returncode}:\n{tail}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_importable(contender: Contender) -> None:
    """Raises :class:`PeerUnavailable` if the peer's interpreter cannot import its framework."""
    if contender.peer is None:
        return
    python = contender.command[0]
    try:
        probe = subprocess.run(
            [python, "-c", f"import {contender.peer.module}"],
            capture_output=True,
            text=True,
            env=contender.env,
            timeout=300,
        )
    except FileNotFoundError as error:
        raise PeerUnavailable(
            f"peer {contender.name!r}: interpreter {python} not found (--peer-python)"
        ) from error
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerUnavailable(
            f"peer {contender.name!r} needs {contender.peer.module!r}, which {python} cannot "
            f"import ({last}). Install it: {contender.peer.install}; or name an interpreter "
            f"that has it: --peer-python {contender.name}=/path/to/venv/bin/python"
        )


class _Process:
    """A contender process: JSON lines on stdout, stderr kept in a temporary file."""

    def __init__(self, contender: Contender, serve: bool):
        self.contender = contender
        self.stderr = tempfile.TemporaryFile(mode="w+")
        command = contender.command + (["--serve"] if serve else [])
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if serve else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=contender.env,
            text=True,
        )

    def _stderr_tail(self, lines: int = 15) -> str:
        self.stderr.seek(0)
        return "\n".join(self.stderr.read().strip().splitlines()[-lines:])

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def wait_for(self, event: str) -> dict:
        for line in self.process.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if message.get("event") == event:
                return message
        code = self.process.wait()
        name = self.contender.name
        tail = self._stderr_tail()
        if code == MISSING_EXIT_CODE and self.contender.peer is not None:
            raise PeerUnavailable(f"peer {name!r}: {tail}")
        if code == DEVICE_EXIT_CODE:
            raise DeviceMismatch(f"{name}: {tail}")
        if code == DOES_NOT_FIT_EXIT_CODE:
            raise DoesNotFit(f"{name}: {tail}")
        raise ContenderFailed(f"{name} exited with code {code} before {event!r}:\n{tail}")

    def close(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.stderr.close()


def _check_params(name: str, message: dict, reference: dict | None) -> None:
    if reference is None:
        return
    if message["n_params"] != reference["n_params"]:
        raise ModelMismatch(
            f"{name} built a model with {message['n_params']:,} parameters but pclr-jax "
            f"{reference['n_params']:,}: refusing to compare different models"
        )
    if message.get("device") != reference.get("device"):
        raise DeviceMismatch(
            f"{name} ran on {message.get('device')!r} but pclr-jax on "
            f"{reference.get('device')!r}: refusing to compare different devices"
        )


def _on_reference_device(contender: Contender, reference: dict) -> Contender:
    """A peer told to run on the reference's device (``--device``); pclr-jax itself as is."""
    if contender.peer is None or not reference.get("device"):
        return contender
    command = [*contender.command, f"--device={reference['device']}"]
    return dataclasses.replace(contender, command=command)


def run_contenders(
    contenders: list[Contender], steps: int, sequential: bool = False, log=None, rewarm: int = 1
) -> dict[str, dict]:
    """Results by contender name (each the contender's final ``result`` message); interleaved
    unless ``sequential``, each turn after ``rewarm`` untimed steps (module docstring).

    The first contender is the reference for the parameter-count and device checks; the peers
    are started with ``--device`` set to the device it reports.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    for contender in contenders:
        check_importable(contender)
    results: dict[str, dict] = {}
    if sequential:
        for contender in contenders:
            log(f"[bench] {contender.name}: set-up, warm-up and {steps} steps")
            reference = results.get(contenders[0].name)
            if reference is not None:
                contender = _on_reference_device(contender, reference)
            process = _Process(contender, serve=False)
            try:
                result = process.wait_for("result")
            finally:
                process.close()
            _check_params(contender.name, result, reference)
            results[contender.name] = result
        return results

    processes: list[_Process] = []
    try:
        reference = None
        for contender in contenders:
            log(f"[bench] {contender.name}: set-up and warm-up")
            if reference is not None:
                contender = _on_reference_device(contender, reference)
            process = _Process(contender, serve=True)
            processes.append(process)
            ready = process.wait_for("ready")
            _check_params(contender.name, ready, reference)
            reference = reference or ready
            log(f"[bench] {contender.name}: first call {ready['first_call_s']:.1f} s")
        for round_index in range(steps):
            for process in processes:
                if rewarm:
                    process.send(f"warm {rewarm}")
                    process.wait_for("warmed")
                process.send("run 1")
                process.wait_for("times")
            log(f"[bench] round {round_index + 1}/{steps} done")
        for process in processes:
            process.send("stop")
            results[process.contender.name] = process.wait_for("result")
    finally:
        for process in processes:
            process.close()
    return results
