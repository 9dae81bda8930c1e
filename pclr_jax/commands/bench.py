"""``pclr bench``: ECG/s, GFLOP/s, fraction of peak, memory and compile time, against peers.

Examples::

    # the released model's training step, 32 pairs, against PyTorch (eager and compiled) and
    # tf.keras, each framework in its own virtual environment:
    pclr bench train --batch-pairs 32 --vs torch --vs torch_compile --vs tf_keras \\
        --peer-python torch=/opt/peer_torch/bin/python \\
        --peer-python tf_keras=/opt/peer_tf/bin/python --json train.json

    pclr bench embed --vs tf_keras --peer-python tf_keras=/opt/peer_tf/bin/python
    pclr bench loss --batch-pairs 4096          # NT-Xent value and gradient alone
    pclr bench loss --batch-pairs 32768 --chunk-size 1024   # beyond memory when dense
    pclr bench loader --config small            # the grain pair loader, no model
    pclr bench train --config tiny --steps 3    # seconds, for a quick check
    # bf16 with every convolution through oneDNN (pip install '.[cpu-onednn]'), against tf.keras:
    pclr bench train --dtype bf16 --conv-impl onednn --vs tf_keras \\
        --peer-python tf_keras=/opt/peer_tf/bin/python

Every contender (pclr-jax and each ``--vs`` peer) runs in its own process on the same model
(same parameter count, checked: the comparison is refused otherwise), batch and dtype, on random
input. By default the contenders are interleaved: set up in turn, then their timed steps
alternate, each turn after ``--rewarm`` untimed steps (default 1: a process's first step after
the others ran can pay for memory the machine took back meanwhile), or ``--sequential`` runs
them one after the other, when they do not fit in memory together. Peers are the scripts in
``benchmarks/peers/``. See ``docs/benchmarks.md``.

On a GPU or TPU, pclr-jax runs on one device (``--devices``), the peers on that same device
(a peer that cannot is refused, never compared from the CPU), and the matrix-product peak is
measured in a child process. Before anything is allocated, XLA's memory plan of the compiled
step is checked against the memory available (``--memory-limit-gib`` to plan for less): a batch
beyond it is refused, naming ``--chunk-size`` (loss) or gradient caching (train).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

PEER_NAMES = ("torch", "torch_compile", "tf_keras")
# pclr_jax.model.conv.CONV_IMPLS, spelled out so that `pclr --help` does not import JAX (a test
# checks that they agree).
CONV_IMPLS = ("auto", "xla", "space_to_depth", "space_to_depth_grad", "dft", "onednn")


def _peer_python(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="throughput, FLOP rate, memory and compile time, against PyTorch/TensorFlow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workload", choices=("train", "embed", "loss", "loader"))
    parser.add_argument(
        "--config",
        choices=("full", "small", "tiny"),
        default="full",
        help="model size: full = released (4,096 x 12, widths 64-320, head 320-320); small: "
        "half widths, 1,024 samples; tiny: for tests",
    )
    parser.add_argument("--samples", type=int, default=None, help="input samples (>= 256)")
    parser.add_argument("--batch-pairs", type=int, default=32, help="pairs per step (2 ECGs)")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="embed: ECGs per call (default 2 x pairs)"
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--conv-impl",
        choices=CONV_IMPLS,
        default="auto",
        help="pclr-jax's convolution formulation (EncoderConfig.conv_impl; onednn needs the "
        "cpu-onednn extra, docs/speed_cpu.md); peers are unaffected",
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument(
        "--vs",
        action="extend",
        nargs="+",
        default=[],
        choices=PEER_NAMES,
        help="peers to compare with (--vs torch tf_keras, or repeated)",
    )
    parser.add_argument(
        "--peer-python",
        action="append",
        default=[],
        type=_peer_python,
        metavar="NAME=PATH",
        help="interpreter of a peer or framework (torch=..., tf_keras=...); default: this one",
    )
    parser.add_argument("--peers-dir", type=pathlib.Path, default=None, help="peer scripts")
    parser.add_argument(
        "--sequential", action="store_true", help="run contenders one after the other"
    )
    parser.add_argument(
        "--rewarm",
        type=int,
        default=1,
        help="untimed steps at the start of each contender's turn in an interleaved round",
    )
    parser.add_argument(
        "--peak-size", type=int, default=4096, help="n of the n^3 peak matmul (0: skip)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        help="loss and train: score the loss's columns this many at a time (0: dense)",
    )
    parser.add_argument(
        "--grad-cache-microbatch",
        type=int,
        default=0,
        help="train: gradient caching with this many pairs per micro-batch (0: off)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="devices pclr-jax uses (0: all of JAX's default backend); peers need 1",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=0.0,
        help="memory per device to plan for (default: what the device or host has available)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write results here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pclr_jax.benchmarking import report, runner
    from pclr_jax.benchmarking.workloads import arch_spec, encoder_config

    if args.workload == "loader" and args.vs:
        raise SystemExit("pclr bench loader has no peers (it measures pclr-jax's grain loader)")
    if args.steps < 1 or args.warmup < 0 or args.batch_pairs < 1:
        raise SystemExit("--steps and --batch-pairs must be positive, --warmup >= 0")
    if min(args.chunk_size, args.grad_cache_microbatch, args.devices) < 0:
        raise SystemExit("--chunk-size, --grad-cache-microbatch and --devices must be >= 0")
    if args.vs and args.devices != 1:
        raise SystemExit("the peers run on one device: compare with --devices 1")
    if args.vs and (args.chunk_size or args.grad_cache_microbatch):
        raise SystemExit("the peers have no chunked loss or gradient caching: drop --vs")
    try:
        config = encoder_config(args.config, args.samples, args.dtype)
        config = config.replace(conv_impl=args.conv_impl)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    arch = arch_spec(config)
    workload_args = [
        f"--workload={args.workload}",
        f"--arch={json.dumps(arch)}",
        f"--batch-pairs={args.batch_pairs}",
        f"--batch-size={args.batch_size}",
        f"--dtype={args.dtype}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--seed={args.seed}",
        f"--chunk-size={args.chunk_size}",
        f"--memory-limit-gib={args.memory_limit_gib}",
    ]
    self_args = [
        f"--devices={args.devices}",
        f"--grad-cache-microbatch={args.grad_cache_microbatch}",
    ]
    kwargs = {"peers_dir": args.peers_dir} if args.peers_dir else {}
    contenders = runner.make_contenders(
        workload_args,
        list(dict.fromkeys(args.vs)),
        dict(args.peer_python),
        self_args=self_args,
        **kwargs,
    )
    machine = report.machine_facts()
    peak_size = args.peak_size if args.workload != "loader" else 0
    errors = (
        runner.PeerUnavailable,
        runner.ModelMismatch,
        runner.ContenderFailed,
        runner.DeviceMismatch,
        runner.DoesNotFit,
    )
    try:
        if peak_size:
            print(f"[bench] matmul peak ({peak_size}^3, fp32 and bf16)", file=sys.stderr)
        before = runner.measure_peaks(peak_size) if peak_size else {"peaks": {}}
        results = runner.run_contenders(contenders, args.steps, args.sequential, rewarm=args.rewarm)
        # measured again after the contenders, the best of both (the load varies)
        after = runner.measure_peaks(peak_size) if peak_size else before
    except errors as error:
        print(f"pclr bench: {error}", file=sys.stderr)
        return 2
    peaks = {dtype: max(peak, after["peaks"][dtype]) for dtype, peak in before["peaks"].items()}
    ref = results[runner.SELF]
    machine.update({k: ref.get(k) for k in ("platform", "device_kind", "device_count")})
    machine.update({k: v for k, v in before.items() if k != "peaks"})
    rows = report.summarize(results, runner.SELF, peaks, args.dtype)
    machine["load_average_1min_after"] = os.getloadavg()[0]
    title = (
        f"pclr bench {args.workload}: {args.config} model ({config.n_samples} x "
        f"{config.n_leads}), {args.batch_pairs} pairs, {args.dtype}, conv_impl "
        f"{args.conv_impl}, median of {args.steps} "
        f"steps after {args.warmup} warm-up, "
        + ("sequential" if args.sequential else f"interleaved, {args.rewarm} untimed per turn")
    )
    load = f"{machine['load_average_1min']:.1f} -> {machine['load_average_1min_after']:.1f}"
    print(f"\n{title}\n{machine['cpu_model']}, {machine['cores']} cores, load average {load}")
    devices = results[runner.SELF].get("devices") or 0
    print(
        f"JAX device: {machine['device_count']} x {machine['device_kind']} "
        f"({machine['platform']}), pclr-jax used {devices}"
    )
    if peaks:
        print(
            f"matmul peak via XLA, one device: fp32 {peaks['fp32']:.0f}, bf16 "
            f"{peaks['bf16']:.0f} GFLOP/s"
        )
    if ref.get("flops_per_step"):
        per_ecg = ref["flops_per_step"] / ref["ecgs_per_step"] / 1e9
        # train/embed: the model's FLOPs counted from its configuration (whatever formulation
        # computes them); loss: XLA's cost analysis of the compiled program (docs/benchmarks.md).
        source = "XLA cost analysis" if args.workload == "loss" else "model FLOPs (from the config)"
        print(f"{source}: {per_ecg:.4g} GFLOP per ECG per step")
    print()
    print(report.markdown_table(rows))
    if args.json:
        output = {
            "benchmark": f"pclr bench {args.workload}",
            "title": title,
            "settings": {
                k: (str(v) if isinstance(v, pathlib.Path) else v)
                for k, v in vars(args).items()
                if k != "func"
            },
            "arch": arch,
            "machine": machine,
            "matmul_peak_gflop_per_s": peaks,
            "flops_per_ecg": (
                ref["flops_per_step"] / ref["ecgs_per_step"] if ref.get("flops_per_step") else None
            ),
            "rows": rows,
            "contenders": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2))
        print(f"\nwrote {args.json}")
    return 0
