"""Issue 23's measurement: oneDNN's convolutions (``conv_impl="onednn"``) against XLA's on CPU.

Two parts, float32 and bfloat16, default ``EncoderConfig`` (12 x 4096 input; 32 pairs = 64 ECGs):

1. **Per layer.** For every distinct convolution of the encoder, each pass timed separately:
   forward, input gradient (backward-data) and kernel gradient (backward-weights), for XLA (the
   formulation ``"auto"`` takes in CPU training without oneDNN, ``space_to_depth`` for strided
   k16 layers and ``lax`` otherwise, and the plain ``"xla"``) and for the oneDNN custom call
   (:mod:`pclr_jax.model.onednn_conv`) in each memory-format choice of ``--layouts`` (default
   ``auto``, the module's per-dtype/per-pass choice; reorders from and to NWC/WIO included), with
   oneDNN's implementation named (e.g. ``brgconv:avx512_core_amx``). Layouts that fall to oneDNN's
   reference kernels (``ref:any``) are not timed. A layer's contenders run INTERLEAVED (A, B, C,
   A, B, C, ...) after one warm-up call each; medians over ``--rounds``.
2. **Whole programs, measured (not projected).** The training step (``pclr bench train``'s
   program, :func:`pclr_jax.benchmarking.workloads.compile_train_step`: PCLR with head, NT-Xent,
   Adam) with ``conv_impl`` ``onednn``, XLA's training formulation (``space_to_depth``) and
   ``xla``; and the embedding forward pass (``pclr bench embed``'s program, batch 64) with
   ``onednn`` and ``xla`` (XLA's inference formulation). All of a part's programs are compiled
   first, then their calls interleaved; medians over ``--step-rounds``. The ratio XLA / oneDNN
   of the step decides: >= 1.2x in float32 or >= 1.5x in bfloat16 (issue 23's gate), and it is
   what ``CPU_AUTO`` in ``pclr_jax/model/conv.py`` should follow.

The per-layer times do not add up to a step (a step's convolutions run with other work around
them, fused or not, sharing caches and threads), which is why part 2 measures the programs.

    PYTHONPATH=. python benchmarks/onednn_gate.py --json benchmarks/results/onednn_gate.json
    PYTHONPATH=. python benchmarks/onednn_gate.py --skip-layers --json ...   # part 2 only
    PYTHONPATH=. python benchmarks/onednn_gate.py --markdown benchmarks/results/onednn_gate.json

``--markdown JSON`` prints the per-layer table of a result file as Markdown (for
``docs/speed_cpu.md``) and times nothing. ``--quick`` (smoke test, a minute or two on an idle
2-core machine): 256 samples, 2 pairs, 2 rounds. Needs the ``cpu-onednn`` extra (the extension is
compiled on first use). Name the machine and its load when quoting; ``--json`` records both.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from pclr_jax.benchmarking import workloads
from pclr_jax.model import conv, onednn_conv
from pclr_jax.model.encoder import EncoderConfig

PASSES = ("fwd", "bwd_data", "bwd_weights")
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
GATE = {"fp32": 1.2, "bf16": 1.5}
# What "auto" takes on CPU without oneDNN: (training, inference).
XLA_AUTO = conv.AUTO_IMPL["cpu"]


def conv_layers(config: EncoderConfig) -> list[dict]:
    """The encoder's convolutions in order, as :class:`pclr_jax.model.encoder.PCLREncoder`
    builds them: name, samples in, channels in and out, kernel, stride, and whether the step
    needs the input gradient (not for the stem, whose input is the data)."""
    k, n, c = config.kernel_size, config.n_samples, config.stem_filters
    layers = [dict(name="stem_conv", n=n, c_in=config.n_leads, c_out=c, k=k, stride=1, dx=False)]
    for i, (filters, ds) in enumerate(zip(config.unit_filters, config.downsample, strict=True)):
        n_out = -(-n // ds)
        if c != filters:
            layers.append(dict(name=f"unit_{i}/skip_conv", n=n_out, c_in=c, c_out=filters, k=1))
        layers.append(dict(name=f"unit_{i}/conv_0", n=n, c_in=c, c_out=filters, k=k))
        layers.append(dict(name=f"unit_{i}/conv_1", n=n, c_in=filters, c_out=filters, k=k))
        layers[-1]["stride"] = ds
        n, c = n_out, filters
    return [{"stride": 1, "dx": True, **layer} for layer in layers]


def distinct(layers: list[dict]) -> list[dict]:
    """One row per distinct (n, c_in, c_out, k, stride, dx), with the names and the count."""
    rows: dict[tuple, dict] = {}
    for layer in layers:
        key = tuple(layer[f] for f in ("n", "c_in", "c_out", "k", "stride", "dx"))
        row = rows.setdefault(key, {**layer, "names": [], "count": 0})
        row["names"].append(layer["name"])
        row["count"] += 1
    return list(rows.values())


def interleaved(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each ``fn(*args)`` in ``contenders`` (key -> (fn, args)), timed
    round-robin after one warm-up call each (excluded)."""
    for fn, args in contenders.values():
        jax.block_until_ready(fn(*args))
    times = {key: [] for key in contenders}
    for _ in range(rounds):
        for key, (fn, args) in contenders.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[key].append(time.perf_counter() - start)
    return times


def _xla_passes(impl: str, stride: int) -> dict:
    def f(x, w):
        return conv.conv1d(x, w, stride, impl)

    return {
        "fwd": jax.jit(f),
        "bwd_data": jax.jit(lambda x, w, dy: jax.vjp(lambda x: f(x, w), x)[1](dy)[0]),
        "bwd_weights": jax.jit(lambda x, w, dy: jax.vjp(lambda w: f(x, w), w)[1](dy)[0]),
    }


def _onednn_passes(layout: str, stride: int, n: int, k: int) -> dict:
    return {
        "fwd": jax.jit(functools.partial(onednn_conv.forward, stride=stride, layout=layout)),
        "bwd_data": jax.jit(lambda x, w, dy: onednn_conv.backward_data(dy, w, n, stride, layout)),
        "bwd_weights": jax.jit(
            lambda x, w, dy: onednn_conv.backward_weights(x, dy, k, stride, layout)
        ),
    }


def time_layer(row: dict, dtype: str, batch: int, layouts: list[str], rounds: int) -> dict:
    """Median ms per pass of XLA (``auto``'s training formulation and ``xla``) and of oneDNN in
    each layout (those not falling to reference kernels); the fastest layout per pass."""
    n, c_in, c_out, k, s = (row[f] for f in ("n", "c_in", "c_out", "k", "stride"))
    rng = np.random.default_rng(n + c_in + c_out + k + s)
    dt = DTYPES[dtype]
    x = jnp.asarray(rng.normal(size=(batch, n, c_in)), dt)
    w = jnp.asarray(rng.normal(size=(k, c_in, c_out)) / np.sqrt(k * c_in), dt)
    dy = jnp.asarray(rng.normal(size=(batch, -(-n // s), c_out)), dt)
    args = {"fwd": (x, w), "bwd_data": (x, w, dy), "bwd_weights": (x, w, dy)}
    auto = XLA_AUTO[0]
    contenders, impls = {}, {}
    for impl in dict.fromkeys([auto, "xla"]):
        for what, fn in _xla_passes(impl, s).items():
            contenders[("xla", impl, what)] = (fn, args[what])
    for layout in layouts:
        for what, fn in _onednn_passes(layout, s, n, k).items():
            impl, reorders = onednn_conv.describe(what, dt, n, c_in, c_out, k, s, batch, layout)
            if impl.startswith("ref"):
                continue
            impls[(layout, what)] = (impl, reorders)
            contenders[("onednn", layout, what)] = (fn, args[what])
    medians = {
        key: 1e3 * statistics.median(ts) for key, ts in interleaved(contenders, rounds).items()
    }
    result = {**row, "dtype": dtype, "xla_auto_impl": auto, "passes": {}}
    for what in PASSES:
        tried = {lay: ms for (who, lay, w), ms in medians.items() if who == "onednn" and w == what}
        best = min(tried, key=tried.get)
        result["passes"][what] = {
            "xla_auto_ms": medians[("xla", auto, what)],
            "xla_ms": medians[("xla", "xla", what)],
            "onednn_ms": tried[best],
            "onednn_layout": best,
            "onednn_impl": impls[(best, what)][0],
            "onednn_reorders": impls[(best, what)][1],
            "onednn_ms_by_layout": tried,
        }
    return result


def time_steps(configs: dict, pairs: int, rounds: int) -> dict[str, list[float]]:
    """Whole training steps (``pclr bench train``'s program, one device), interleaved."""
    device = jax.devices()[:1]
    contenders, states = {}, {}
    for key, config in configs.items():
        compiled, state, abstract, _, _ = workloads.compile_train_step(config, pairs, device)
        batch = workloads.random_on_device(abstract)
        states[key] = state

        def step(batch, key=key, compiled=compiled):
            states[key], metrics = compiled(states[key], batch)
            return metrics

        contenders[key] = (step, (batch,))
    return interleaved(contenders, rounds)


def time_embeds(configs: dict, batch: int, rounds: int) -> dict[str, list[float]]:
    """The embedding forward pass (``pclr bench embed``'s program), device arrays, interleaved."""
    contenders = {}
    for key, config in configs.items():
        _, forward, _, abstract, _ = workloads.compile_embed(config, batch, jax.devices()[:1])
        contenders[key] = (forward, (workloads.random_on_device(abstract),))
    return interleaved(contenders, rounds)


def machine() -> dict:
    """lscpu's model, family/model and the vector extensions that matter here."""
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(fields.get("Flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "model_name": fields.get("Model name"),
        "cpu_family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "cpus": os.cpu_count(),
        "flags": {flag: flag in flags for flag in wanted},
        "platform": platform.platform(),
    }


def _print_layers(rows: list[dict]) -> None:
    head = f"{'layer':<34}{'n':>3} {'pass':<12}{'XLA auto':>9}{'XLA xla':>9}{'oneDNN':>9}"
    print(f"\n{head}{'ratio':>7}  oneDNN layout / implementation (reorders)")
    for row in rows:
        name = ",".join(row["names"])
        if len(name) > 33:
            name = name[:30] + "..."
        for what in PASSES:
            p = row["passes"][what]
            skip = "" if what != "bwd_data" or row["dx"] else "  (not in the step)"
            ratio = p["xla_auto_ms"] / p["onednn_ms"]
            reorders = ",".join(p["onednn_reorders"]) or "none"
            print(
                f"{name:<34}{row['count']:>3} {what:<12}{p['xla_auto_ms']:>9.2f}"
                f"{p['xla_ms']:>9.2f}{p['onednn_ms']:>9.2f}{ratio:>6.2f}x  "
                f"{p['onednn_layout']} / {p['onednn_impl']} ({reorders}){skip}"
            )
            name = ""


def markdown_layers(result: dict) -> str:
    """The per-layer table of a result (``--json``) as Markdown: median ms per pass, XLA
    (``"auto"``'s training formulation without oneDNN, and plain ``xla``) and oneDNN (its fastest
    timed layout, implementation and reorders), float32 and bfloat16 rows per layer."""
    lines = [
        "| layer | pass | dtype | XLA auto ms | XLA xla ms | oneDNN ms | XLA auto / oneDNN | "
        "oneDNN layout / implementation (reorders) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    rows = sorted(result["layers"], key=lambda r: (r["names"][0], r["dtype"] != "fp32"))
    order = {name: i for i, name in enumerate(r["names"][0] for r in result["layers"])}
    rows.sort(key=lambda r: order[r["names"][0]])
    for row in rows:
        for what in PASSES:
            p = row["passes"][what]
            note = "" if what != "bwd_data" or row["dx"] else " (not in the step)"
            reorders = ",".join(p["onednn_reorders"]) or "none"
            lines.append(
                f"| {', '.join(row['names'])} | {what}{note} | {row['dtype']} | "
                f"{p['xla_auto_ms']:.2f} | {p['xla_ms']:.2f} | {p['onednn_ms']:.2f} | "
                f"{p['xla_auto_ms'] / p['onednn_ms']:.2f}x | {p['onednn_layout']} / "
                f"{p['onednn_impl']} ({reorders}) |"
            )
    return "\n".join(lines)


def _medians_ms(times: dict) -> dict:
    return {key: 1e3 * statistics.median(ts) for key, ts in times.items()}


def measure_programs(configs: dict, pairs: int, rounds: int) -> dict:
    """Part 2: the training step per dtype with conv_impl onednn, XLA's training formulation and
    xla, interleaved; the embedding with onednn and xla, interleaved. Median ms, every time, and
    the ratios (XLA / oneDNN: above 1, oneDNN is faster)."""
    batch = 2 * pairs
    train = {
        (dtype, impl): config.replace(conv_impl=impl)
        for dtype, config in configs.items()
        for impl in ("onednn", XLA_AUTO[0], "xla")
    }
    embed = {
        (dtype, impl): config.replace(conv_impl=impl)
        for dtype, config in configs.items()
        for impl in ("onednn", XLA_AUTO[1])
    }
    print(f"\n== training step ({pairs} pairs), interleaved, {rounds} rounds", flush=True)
    steps = time_steps(train, pairs, rounds)
    print(f"== embedding (batch {batch}), interleaved, {rounds} rounds", flush=True)
    embeds = time_embeds(embed, batch, rounds)
    out = {}
    for dtype in configs:
        step_ms = _medians_ms({impl: steps[(dtype, impl)] for d, impl in train if d == dtype})
        embed_ms = _medians_ms({impl: embeds[(dtype, impl)] for d, impl in embed if d == dtype})
        out[f"train_{dtype}"] = {
            "median_ms": step_ms,
            "times_s": {impl: steps[(dtype, impl)] for d, impl in train if d == dtype},
            "ecg_per_s": {impl: 1e3 * batch / ms for impl, ms in step_ms.items()},
            "ratio_vs_xla_auto": step_ms[XLA_AUTO[0]] / step_ms["onednn"],
            "ratio_vs_xla": step_ms["xla"] / step_ms["onednn"],
        }
        out[f"embed_{dtype}"] = {
            "median_ms": embed_ms,
            "times_s": {impl: embeds[(dtype, impl)] for d, impl in embed if d == dtype},
            "ecg_per_s": {impl: 1e3 * batch / ms for impl, ms in embed_ms.items()},
            "ratio_vs_xla": embed_ms[XLA_AUTO[1]] / embed_ms["onednn"],
        }
    return out


def _print_programs(programs: dict) -> None:
    print("\n| program | dtype | conv_impl | median ms | ECG/s | XLA / oneDNN |")
    print("|---|---|---|---:|---:|---:|")
    for name, entry in programs.items():
        kind, dtype = name.split("_")
        for impl, ms in entry["median_ms"].items():
            ratio = ""
            if impl != "onednn":
                ratio = f"{ms / entry['median_ms']['onednn']:.2f}x"
            print(
                f"| {kind} | {dtype} | {impl} | {ms:.1f} | {entry['ecg_per_s'][impl]:.1f} | "
                f"{ratio} |"
            )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="print the per-layer table of this result file, only")
    parser.add_argument("--quick", action="store_true", help="smoke test: small and short")
    parser.add_argument("--skip-layers", action="store_true", help="part 2 only")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per layer (median)")
    parser.add_argument("--step-rounds", type=int, default=7, help="timed steps / embeddings")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per step (2x ECGs)")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument(
        "--layouts", nargs="+", default=["auto"], choices=["auto", *sorted(onednn_conv.LAYOUTS)]
    )
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown_layers(json.load(f)))
        return {}
    if args.quick:
        args.samples, args.pairs, args.rounds, args.step_rounds = 256, 2, 2, 2
    ok, version = onednn_conv.available()
    if not ok:
        raise SystemExit(version)
    load_before = os.getloadavg()
    batch = 2 * args.pairs
    result = {
        "machine": machine(),
        "load_average_before": load_before,
        "jax": jax.__version__,
        "onednn": version,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")},
        "samples": args.samples,
        "pairs": args.pairs,
        "batch_ecgs": batch,
        "rounds": args.rounds,
        "step_rounds": args.step_rounds,
        "layouts": args.layouts,
        "auto_resolves_to": {
            f"{mode}_{d}": conv.resolve_impl("auto", mode == "train", dtype=DTYPES[d])
            for d in args.dtypes
            for mode in ("train", "embed")
        },
        "layers": [],
    }
    print(f"machine: {result['machine']}\nload average before: {load_before}")
    print(f"jax {jax.__version__}, oneDNN {version}; batch {batch} ECGs x {args.samples} samples")
    print(f"conv_impl='auto' here: {result['auto_resolves_to']}")
    configs = {d: workloads.encoder_config("full", args.samples, d) for d in args.dtypes}
    if not args.skip_layers:
        rows = distinct(conv_layers(configs[args.dtypes[0]]))
        for dtype in args.dtypes:
            layer_rows = [time_layer(row, dtype, batch, args.layouts, args.rounds) for row in rows]
            result["layers"] += layer_rows
            print(f"\n== {dtype}: per layer, median ms (ratio: XLA auto / oneDNN best layout)")
            _print_layers(layer_rows)
    result["programs"] = measure_programs(configs, args.pairs, args.step_rounds)
    _print_programs(result["programs"])
    gate = {
        d: result["programs"][f"train_{d}"]["ratio_vs_xla_auto"] >= GATE[d] for d in args.dtypes
    }
    result["gate"] = {"thresholds": GATE, "passes_by_dtype": gate, "passes": any(gate.values())}
    result["load_average_after"] = os.getloadavg()
    print(
        f"\ngate (measured train step, XLA {XLA_AUTO[0]} / oneDNN >= 1.2x fp32 or >= 1.5x bf16): "
        f"{'PASS' if result['gate']['passes'] else 'FAIL'} {gate}"
    )
    print(f"load average after: {result['load_average_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
