"""Issue 23's gate: would oneDNN's convolutions make the CPU training step worth a custom call?

For every distinct convolution of the encoder (default ``EncoderConfig``: 12 x 4096 input; a
training step of 32 pairs = 64 ECGs), float32 and bfloat16, this times each pass separately,
forward, input gradient (backward-data) and kernel gradient (backward-weights):

* XLA, the formulation the encoder's ``conv_impl="auto"`` uses in CPU training
  (``space_to_depth`` for strided k16 layers, ``lax`` otherwise) and the plain ``"xla"`` one:
  ``jit`` of the forward, ``jit`` of ``jax.vjp`` for one gradient (the unused forward is dropped
  by XLA);
* oneDNN through the prototype custom call (:mod:`pclr_jax.model.onednn_conv`), in each memory
  format choice of ``--layouts`` (reorders from and to NWC/WIO included); the fastest per pass
  counts, and oneDNN's implementation for it is named (e.g. ``brgconv:avx512_core_amx``).
  Choices that fall to oneDNN's reference kernels (``ref:any``) are not timed.

All contenders of a layer run INTERLEAVED (A, B, C, A, B, C, ...) after one warm-up call each;
medians over ``--rounds``. Then the whole training step (``pclr bench train``'s program,
:func:`pclr_jax.benchmarking.workloads.compile_train_step`) and the embedding forward pass
(batch 64, :func:`~pclr_jax.benchmarking.workloads.compile_embed`) are timed, interleaved, per
dtype and projected: the step time, less XLA's time for the net's convolutions (each layer's
three passes times its count; the stem needs no input gradient), plus oneDNN's. The gate passes if
the projected training step is >= 1.2x XLA's in float32 or >= 1.5x in bfloat16. The embedding is
projected the same way from forward passes (inference uses plain ``lax``).

The projection assumes the rest of the step (batch norms, pools, loss, optimizer) is unchanged
and that the custom call costs no more inside the step than alone (no fusion lost, no thread
contention between XLA's pool and oneDNN's OpenMP threads): an upper bound to check, not a
measurement of a step.

    PYTHONPATH=. python benchmarks/onednn_gate.py --json benchmarks/results/onednn_gate.json

``--quick`` (smoke test, about a minute on an idle 2-core machine): 256 samples, 2 pairs, 2 rounds,
one layout, the ``auto`` step only. Needs the
custom call built (``pip install '.[cpu-onednn]' && bash csrc/onednn_conv/build.sh``). Name the
machine and its load when quoting; ``--json`` records both.
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
    auto = conv.resolve_impl("auto", train=True)
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


def _layer_total(row: dict, key: str, passes=PASSES) -> float:
    """ms of the layer's passes in one step (times its count; no input gradient for the stem)."""
    used = [p for p in passes if p != "bwd_data" or row["dx"]]
    return row["count"] * sum(row["passes"][p][key] for p in used)


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke test: small and short")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--step-rounds", type=int, default=7, help="timed training steps")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per step (2x ECGs)")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["plain_act", "any", "plain", "blocked"],
        choices=sorted(onednn_conv.LAYOUTS),
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.pairs, args.rounds, args.step_rounds = 256, 2, 2, 2
        args.layouts = ["plain_act"]
    ok, version = onednn_conv.available()
    if not ok:
        raise SystemExit(f"oneDNN custom call unavailable: {version}")
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
        "layers": [],
        "projection": {},
    }
    print(f"machine: {result['machine']}\nload average before: {load_before}")
    print(f"jax {jax.__version__}, oneDNN {version}; batch {batch} ECGs x {args.samples} samples")
    configs = {d: workloads.encoder_config("full", args.samples, d) for d in args.dtypes}
    rows = distinct(conv_layers(configs[args.dtypes[0]]))
    for dtype in args.dtypes:
        layer_rows = [time_layer(row, dtype, batch, args.layouts, args.rounds) for row in rows]
        result["layers"] += layer_rows
        print(f"\n== {dtype}: per layer, median ms (ratio: XLA auto / oneDNN best layout)")
        _print_layers(layer_rows)
    step_configs = {}
    for dtype in args.dtypes:
        for impl in ("auto",) if args.quick else ("auto", "xla"):
            step_configs[(dtype, impl)] = configs[dtype].replace(conv_impl=impl)
    steps = time_steps(step_configs, args.pairs, args.step_rounds)
    embeds = time_embeds({d: configs[d] for d in args.dtypes}, batch, args.step_rounds)
    print("\n== projection (ms; ratio = measured XLA / projected oneDNN)")
    for dtype in args.dtypes:
        layer_rows = [r for r in result["layers"] if r["dtype"] == dtype]
        onednn_train = sum(_layer_total(r, "onednn_ms") for r in layer_rows)
        onednn_fwd = sum(_layer_total(r, "onednn_ms", ("fwd",)) for r in layer_rows)
        for impl, key in (("auto", "xla_auto_ms"), ("xla", "xla_ms")):
            if (dtype, impl) not in steps:
                continue
            step = 1e3 * statistics.median(steps[(dtype, impl)])
            xla_convs = sum(_layer_total(r, key) for r in layer_rows)
            projected = step - xla_convs + onednn_train
            entry = {
                "step_ms": step,
                "step_times_s": steps[(dtype, impl)],
                "xla_conv_ms": xla_convs,
                "onednn_conv_ms": onednn_train,
                "projected_step_ms": projected,
                "ratio": step / projected,
            }
            result["projection"][f"train_{dtype}_{impl}"] = entry
            print(
                f"train {dtype} (step conv_impl={impl}): step {step:.1f}, XLA convs "
                f"{xla_convs:.1f}, oneDNN convs {onednn_train:.1f} -> {projected:.1f}: "
                f"{entry['ratio']:.2f}x"
            )
        embed = 1e3 * statistics.median(embeds[dtype])
        xla_fwd = sum(_layer_total(r, "xla_ms", ("fwd",)) for r in layer_rows)
        projected = embed - xla_fwd + onednn_fwd
        result["projection"][f"embed_{dtype}"] = {
            "embed_ms": embed,
            "embed_times_s": embeds[dtype],
            "xla_conv_fwd_ms": xla_fwd,
            "onednn_conv_fwd_ms": onednn_fwd,
            "projected_embed_ms": projected,
            "ratio": embed / projected,
        }
        print(
            f"embed {dtype} (batch {batch}): {embed:.1f}, XLA conv fwd {xla_fwd:.1f}, oneDNN "
            f"{onednn_fwd:.1f} -> {projected:.1f}: {embed / projected:.2f}x"
        )
    gate = {d: result["projection"][f"train_{d}_auto"]["ratio"] >= GATE[d] for d in args.dtypes}
    result["gate"] = {"thresholds": GATE, "passes_by_dtype": gate, "passes": any(gate.values())}
    result["load_average_after"] = os.getloadavg()
    print(
        f"\ngate (train step >= 1.2x fp32 or >= 1.5x bf16, vs conv_impl=auto): "
        f"{'PASS' if result['gate']['passes'] else 'FAIL'} {gate}"
    )
    print(f"load average after: {result['load_average_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
