"""How a benchmark contender talks to ``pclr bench``: workload arguments in, JSON lines out.

Standard library only: the peer scripts in ``benchmarks/peers/`` run in other virtual
environments (PyTorch, TensorFlow) without JAX or pclr-jax, and load this file by its path.

A contender is a process that builds one workload and exposes ``step()`` (one timed unit of
work: a training step, one embedding call, ...). It prints JSON lines on stdout:

* standalone (default): one line ``{"event": "result", ...}`` after ``--warmup`` untimed and
  ``--steps`` timed steps;
* ``--serve``: ``{"event": "ready", ...}`` after setup, first call and warm-up, then for each
  ``run K`` line on stdin ``{"event": "times", "times": [...]}`` (K timed steps), for each
  ``warm K`` line ``{"event": "warmed"}`` (K untimed steps), and for ``stop`` the final
  ``{"event": "result", ...}``. ``pclr bench`` uses this to interleave contenders:
  each compiles once and the timed steps alternate between them.

Every result carries ``maxrss_mib``, the process's peak resident memory (:func:`maxrss_mib`),
``device_peak_mib``, the accelerator memory its framework reports as peak (None on CPU), and
``device`` (``cpu``, ``gpu`` or ``tpu``), where its work ran. ``pclr bench`` starts pclr-jax
first and passes its device to the peers as ``--device``: a peer that cannot run there exits
with :data:`DEVICE_EXIT_CODE`, so a GPU is never compared with a CPU peer. A contender that
finds, before allocating anything, that the workload does not fit in memory exits with
:data:`DOES_NOT_FIT_EXIT_CODE` and says what to do instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable

WORKLOADS = ("train", "embed", "loss", "loader")
MISSING_EXIT_CODE = 3  # the contender's framework cannot be imported
DEVICE_EXIT_CODE = 4  # the contender cannot run on the device pclr-jax runs on
DOES_NOT_FIT_EXIT_CODE = 5  # the workload does not fit in memory (checked before allocating)
DEVICES = ("cpu", "gpu", "tpu")


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The arguments every contender takes (``pclr bench`` passes them all)."""
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument(
        "--arch", required=True, help="the model as JSON (see pclr_jax.benchmarking.workloads)"
    )
    parser.add_argument("--batch-pairs", type=int, required=True, help="pairs per train step")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="ECGs per embedding call (0: 2 x batch-pairs)"
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--mode", default="", help="peer variant (torch: eager or compile)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help="interleaved mode (stdin commands)")
    parser.add_argument(
        "--device", choices=DEVICES, default=None, help="run here (peers: pclr-jax's device)"
    )
    parser.add_argument("--chunk-size", type=int, default=0, help="loss column chunk (0: dense)")
    parser.add_argument(
        "--memory-limit-gib", type=float, default=0.0, help="memory to plan for (0: available)"
    )


def refuse(code: int, message: str) -> None:
    """Ends a contender that cannot run the workload: ``message`` on stderr, exit ``code``."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def maxrss_mib() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's address
    space. ``ru_maxrss`` is not used there because it survives ``fork`` + ``exec``: a child of a
    large parent (``pclr bench`` itself holds JAX and the peak-test matrices) would report the
    parent's peak when its own is smaller. Elsewhere: ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def run_contender(
    args: argparse.Namespace,
    setup: Callable[[], tuple[Callable[[], None], dict]],
    device_peak_mib: Callable[[], float | None] = lambda: None,
) -> None:
    """Builds the workload with ``setup() -> (step, info)`` and runs the protocol above.

    ``step()`` must block until its work is done. ``info`` must hold ``n_params`` and
    ``ecgs_per_step``, should hold ``device``, and may add anything (framework versions,
    FLOPs, ...). ``device_peak_mib()`` is read at the end (accelerator memory peak, or None).
    """
    start = time.perf_counter()
    step, info = setup()
    setup_s = time.perf_counter() - start
    first_call_s = timed(step)
    for _ in range(args.warmup):
        step()
    info = {**info, "setup_s": setup_s, "first_call_s": first_call_s}
    times: list[float] = []
    if args.serve:
        emit({"event": "ready", **info})
        for line in sys.stdin:
            command = line.split()
            if not command:
                continue
            if command[0] == "run":
                batch = [timed(step) for _ in range(int(command[1]))]
                times.extend(batch)
                emit({"event": "times", "times": batch})
            elif command[0] == "warm":
                for _ in range(int(command[1])):
                    step()
                emit({"event": "warmed"})
            elif command[0] == "stop":
                break
            else:
                raise SystemExit(f"unknown command {line!r}")
    else:
        times = [timed(step) for _ in range(args.steps)]
    emit(
        {
            "event": "result",
            **info,
            "times": times,
            "maxrss_mib": maxrss_mib(),
            "device_peak_mib": device_peak_mib(),
        }
    )


def peer_main(
    description: str,
    setup: Callable[[argparse.Namespace, dict], tuple[Callable[[], None], dict]],
    check: Callable[[str, dict], dict],
    device_peak_mib: Callable[[], float | None] = lambda: None,
) -> None:
    """The command line of a peer script: the workload arguments, then either ``--check FILE``
    (``check(file, arch)``: outputs against pclr-jax's, printed as one JSON line) or the
    contender protocol on ``setup(args, arch)``; ``arch`` is the ``--arch`` JSON."""
    parser = argparse.ArgumentParser(description=description)
    add_workload_args(parser)
    parser.add_argument("--check", help="npz of pclr-jax weights, input and outputs")
    args = parser.parse_args()
    arch = json.loads(args.arch)
    if args.check:
        emit({"event": "check", **check(args.check, arch)})
        return
    run_contender(args, lambda: setup(args, arch), device_peak_mib)
