"""Formulations of the encoder's convolutions, pools and batch norms, timed per layer and whole.

Every contender of a section is compiled first and then timed INTERLEAVED (A, B, C, A, B, C, ...)
in one process, so a shared or throttled machine slows all of them alike; medians over
``--rounds`` rounds, and the ratios between contenders, are what to read.

Sections:

* ``layers``: each convolution shape of the released model (batch 64 ECGs = 32 pairs, 12 x 4096
  input) under ``jit(grad)`` (forward + both gradients) and forward alone, ``conv_impl``
  ``xla`` vs ``space_to_depth`` (and ``dft`` where it takes the layer); the unit max pools; batch
  norm + ReLU, ``flax`` vs ``fused``.
* ``step``: the real training step (``make_train_step``: PCLR with head, NT-Xent t=0.1, Adam,
  32 pairs = 64 ECGs), float32 and bfloat16 compute, per (conv_impl, norm_impl).
* ``embed``: the encoder forward in eval mode (``make_embed_fn``), batch 64, per formulation.
* ``flags``: ``--xla-flags`` variants of the step with the default formulations, each in its own
  process (XLA flags are read once per process), alternated A, B, A, B over ``--flag-repeats``.

    python benchmarks/conv_formulations.py --out benchmarks/results/conv_formulations.json

ECG/s counts ECGs: a step on B pairs processes 2B ECGs. Name the machine and its load when quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import get_loss
from pclr_jax.model import batch_norm, conv, dft_conv
from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.step.optimizers import fixed_adam_config, make_optimizer
from pclr_jax.step.train_state import create_train_state
from pclr_jax.step.train_step import make_embed_fn, make_train_step

BATCH = 64  # ECGs per step: 32 pairs

# (name, samples in, c_in, c_out, kernel, stride) of the released 12-lead model.
CONV_LAYERS = [
    ("stem_conv", 4096, 12, 64, 16, 1),
    ("unit_0/conv_0", 4096, 64, 128, 16, 1),
    ("unit_0/conv_1", 4096, 128, 128, 16, 4),
    ("unit_0/skip_conv", 1024, 64, 128, 1, 1),
    ("unit_1/conv_0", 1024, 128, 196, 16, 1),
    ("unit_1/conv_1", 1024, 196, 196, 16, 4),
    ("unit_1/skip_conv", 256, 128, 196, 1, 1),
    ("unit_2/conv_0", 256, 196, 256, 16, 1),
    ("unit_2/conv_1", 256, 256, 256, 16, 4),
    ("unit_2/skip_conv", 64, 196, 256, 1, 1),
    ("unit_3/conv_0", 64, 256, 320, 16, 1),
    ("unit_3/conv_1", 64, 320, 320, 16, 4),
    ("unit_3/skip_conv", 16, 256, 320, 1, 1),
]
POOLS = [("unit_0/pool", 4096, 64), ("unit_1/pool", 1024, 128), ("unit_2/pool", 256, 196)]
NORMS = [
    ("stem_bn", 4096, 64),
    ("unit_0/bn_0", 4096, 128),
    ("unit_0/bn_out", 1024, 128),
    ("unit_1/bn_0", 1024, 196),
    ("unit_1/bn_out", 256, 196),
]


def interleaved(fns: dict, args: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each ``fns[key](*args[key])``, timed round-robin after one warm call."""
    for key, fn in fns.items():
        jax.block_until_ready(fn(*args[key]))
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args[key]))
            times[key].append(time.perf_counter() - start)
    return times


def _grad(f):
    return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a[:-1]).astype(jnp.float32) * a[-1]), (0, 1)))


def _ncw_conv(x, w, stride, impl):
    """Benchmark-only contender: the lax conv in NCW layout (transposes included)."""
    pad = conv.same_padding(x.shape[1], w.shape[0], stride)
    y = jax.lax.conv_general_dilated(
        jnp.swapaxes(x, 1, 2), w, (stride,), [pad], dimension_numbers=("NCW", "WIO", "NCW")
    )
    return jnp.swapaxes(y, 1, 2)


def layers(dtype: str, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    dt = jnp.dtype(dtype)
    rows = []
    for name, n, c_in, c_out, k, s in CONV_LAYERS:
        x = jnp.asarray(rng.normal(size=(BATCH, n, c_in)), dt)
        w = jnp.asarray(rng.normal(size=(k, c_in, c_out)) / np.sqrt(k * c_in), dt)
        g = jnp.asarray(rng.normal(size=(BATCH, -(-n // s), c_out)), jnp.float32)
        fns, args = {}, {}
        # XLA's formulations (oneDNN's: benchmarks/onednn_gate.py). Strided: each its own code
        # ("dft" is "space_to_depth_grad" there); stride 1: one lax convolution, but for "dft"
        # where it takes the layer (dft_conv.applies).
        xla_impls = [i for i in conv.CONV_IMPLS[1:] if i not in ("onednn", "dft")]
        if s > 1 and k > 1:
            impls = xla_impls
        else:
            impls = ["xla"] + (["dft"] if dft_conv.applies(n, c_in, k, s) else [])
        for impl in impls + ["ncw"]:
            c = _ncw_conv if impl == "ncw" else conv.conv1d
            fwd = jax.jit(lambda x, w, impl=impl, s=s, c=c: c(x, w, s, impl))
            fns[(impl, "fwd")], args[(impl, "fwd")] = fwd, (x, w)
            f = _grad(lambda x, w, impl=impl, s=s, c=c: c(x, w, s, impl))
            fns[(impl, "fwd+bwd")], args[(impl, "fwd+bwd")] = f, (x, w, g)
        times = interleaved(fns, args, rounds)
        flops = 2 * BATCH * -(-n // s) * k * c_in * c_out
        for (impl, what), ts in times.items():
            med = statistics.median(ts)
            mult = 3 if what == "fwd+bwd" else 1
            rows.append(
                dict(
                    layer=name,
                    op="conv",
                    impl=impl,
                    what=what,
                    ms=1e3 * med,
                    gflops=mult * flops / med / 1e9,
                    times_s=ts,
                )
            )
    for name, n, c in POOLS:
        x = jnp.asarray(rng.normal(size=(BATCH, n, c)), dt)
        fns = {
            impl: jax.jit(jax.grad(lambda x, impl=impl: jnp.sum(conv.max_pool1d(x, 4, impl) ** 2)))
            for impl in ("xla", "space_to_depth")
        }
        times = interleaved(fns, {k: (x,) for k in fns}, rounds)
        for impl, ts in times.items():
            rows.append(
                dict(
                    layer=name,
                    op="max_pool",
                    impl=impl,
                    what="fwd+bwd",
                    ms=1e3 * statistics.median(ts),
                    times_s=ts,
                )
            )
    for name, n, c in NORMS:
        x = jnp.asarray(rng.normal(size=(BATCH, n, c)), dt)
        g = jnp.asarray(rng.normal(size=(BATCH, n, c)), jnp.float32)
        fns = {}
        for impl in ("flax", "fused"):
            module = batch_norm.batch_norm(impl, 0.99, 1e-3, dt, None, "bn")
            variables = module.init(jax.random.key(0), x, use_running_average=True)

            def f(x, params, module=module, stats=variables["batch_stats"]):
                y, _ = module.apply(
                    {"params": params, "batch_stats": stats},
                    x,
                    use_running_average=False,
                    mutable=["batch_stats"],
                )
                return jax.nn.relu(y)

            fns[impl] = (_grad(f), (x, variables["params"], g))
        times = interleaved(
            {k: v[0] for k, v in fns.items()}, {k: v[1] for k, v in fns.items()}, rounds
        )
        for impl, ts in times.items():
            rows.append(
                dict(
                    layer=name,
                    op="batch_norm+relu",
                    impl=impl,
                    what="fwd+bwd",
                    ms=1e3 * statistics.median(ts),
                    times_s=ts,
                )
            )
    for r in rows:
        r["dtype"] = dtype
    return rows


FORMULATIONS = [
    ("xla", "flax"),
    ("space_to_depth", "flax"),
    ("space_to_depth_grad", "flax"),
    ("xla", "fused"),
    ("space_to_depth_grad", "fused"),
]


def _batch(config: EncoderConfig, pairs: int, mesh) -> dict:
    rng = np.random.default_rng(0)
    shape = (pairs, config.n_samples, config.n_leads)
    return jax.device_put(
        {
            "view_a": rng.normal(size=shape).astype(np.float32),
            "view_b": rng.normal(size=shape).astype(np.float32),
            "patient_id": np.arange(pairs, dtype=np.int32),
        },
        NamedSharding(mesh, P("data")),
    )


def steps(dtypes: list[str], formulations: list, pairs: int, rounds: int) -> list[dict]:
    """Training-step times per (dtype, conv_impl, norm_impl), interleaved; state carried along."""
    mesh = make_mesh()
    states, fns, compile_s = {}, {}, {}
    for dtype in dtypes:
        for conv_impl, norm_impl in formulations:
            key = (dtype, conv_impl, norm_impl)
            config = EncoderConfig(dtype=dtype, conv_impl=conv_impl, norm_impl=norm_impl)
            optimizer = make_optimizer(fixed_adam_config(), pairs, total_steps=1000)[0]
            state = create_train_state(
                config, get_loss("ntxent"), optimizer, jax.random.key(0), mesh
            )
            step = make_train_step(config, get_loss("ntxent", temperature=0.1), optimizer, mesh)
            batch = _batch(config, pairs, mesh)
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            compile_s[key] = time.perf_counter() - start
            states[key], fns[key] = (state, batch), step
    times = {key: [] for key in fns}
    losses = {}
    for _ in range(rounds):
        for key, step in fns.items():
            state, batch = states[key]
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times[key].append(time.perf_counter() - start)
            states[key] = (state, batch)
            losses[key] = float(metrics["loss"])
    rows = []
    for (dtype, conv_impl, norm_impl), ts in times.items():
        med = statistics.median(ts)
        rows.append(
            dict(
                dtype=dtype,
                conv_impl=conv_impl,
                norm_impl=norm_impl,
                pairs=pairs,
                ecgs_per_step=2 * pairs,
                median_step_s=med,
                ecg_per_s=2 * pairs / med,
                first_call_s=compile_s[(dtype, conv_impl, norm_impl)],
                times_s=ts,
                last_loss=losses[(dtype, conv_impl, norm_impl)],
            )
        )
    return rows


def embeds(dtypes: list[str], formulations: list, batch: int, rounds: int) -> list[dict]:
    mesh = make_mesh()
    ecgs = np.random.default_rng(1).normal(size=(batch, 4096, 12)).astype(np.float32)
    fns, args = {}, {}
    for dtype in dtypes:
        for conv_impl, norm_impl in formulations:
            config = EncoderConfig(dtype=dtype, conv_impl=conv_impl, norm_impl=norm_impl)
            variables = init_variables(config, jax.random.key(0))
            key = (dtype, conv_impl, norm_impl)
            fns[key], args[key] = make_embed_fn(config, mesh), (variables, ecgs)
    times = interleaved(fns, args, rounds)
    return [
        dict(
            dtype=d,
            conv_impl=c,
            norm_impl=b,
            batch=batch,
            median_s=statistics.median(ts),
            ecg_per_s=batch / statistics.median(ts),
            times_s=ts,
        )
        for (d, c, b), ts in times.items()
    ]


def flags(variants: list[str], dtypes: list[str], pairs: int, rounds: int, repeats: int) -> list:
    """Each XLA_FLAGS variant's step (default formulations) in a fresh process, alternated."""
    rows = []
    for repeat in range(repeats):
        for variant in variants:
            env = dict(os.environ, XLA_FLAGS=variant)
            cmd = [
                sys.executable,
                __file__,
                "--sections",
                "step",
                "--formulations",
                "auto/auto",
                "--dtypes",
                *dtypes,
                "--pairs",
                *map(str, pairs),
                "--rounds",
                str(rounds),
                "--json",
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            for row in json.loads(out.stdout.strip().splitlines()[-1])["step"]:
                rows.append(dict(row, xla_flags=variant, repeat=repeat))
                print(
                    f"  flags {variant!r:60} {row['dtype']:>9}: {row['ecg_per_s']:.1f} ECG/s",
                    flush=True,
                )
    return rows


def _print_tables(result: dict) -> None:
    if "layers" in result:
        print(
            "\n| layer | op | dtype | what | impl | ms | GFLOP/s |\n|---|---|---|---|---|---|---|"
        )
        for r in result["layers"]:
            gf = f"{r['gflops']:.0f}" if "gflops" in r else ""
            print(
                f"| {r['layer']} | {r['op']} | {r['dtype']} | {r['what']} | {r['impl']} | "
                f"{r['ms']:.1f} | {gf} |"
            )
    if "step" in result:
        print("\n| dtype | conv_impl | norm_impl | pairs | ECG/s | median step (s) |")
        print("|---|---|---|---|---|---|")
        for r in result["step"]:
            print(
                f"| {r['dtype']} | {r['conv_impl']} | {r['norm_impl']} | {r['pairs']} | "
                f"{r['ecg_per_s']:.1f} | {r['median_step_s']:.3f} |"
            )
    if "embed" in result:
        print("\n| dtype | conv_impl | norm_impl | batch | ECG/s | median (s) |")
        print("|---|---|---|---|---|---|")
        for r in result["embed"]:
            print(
                f"| {r['dtype']} | {r['conv_impl']} | {r['norm_impl']} | {r['batch']} | "
                f"{r['ecg_per_s']:.1f} | {r['median_s']:.3f} |"
            )
    if "flags" in result:
        print("\n| XLA_FLAGS | dtype | ECG/s (each repeat) |\n|---|---|---|")
        groups = {}
        for r in result["flags"]:
            groups.setdefault((r["xla_flags"], r["dtype"]), []).append(r["ecg_per_s"])
        for (variant, dtype), v in groups.items():
            print(f"| `{variant or '(none)'}` | {dtype} | {', '.join(f'{x:.1f}' for x in v)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=["layers", "step", "embed", "flags"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--layer-dtypes", nargs="+", default=["float32"])
    parser.add_argument("--formulations", nargs="+", default=[f"{c}/{n}" for c, n in FORMULATIONS])
    parser.add_argument("--pairs", type=int, nargs="+", default=[32])
    parser.add_argument("--embed-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--flag-variants",
        nargs="+",
        default=[
            "",
            "--xla_cpu_enable_fast_math=true",
            "--xla_cpu_use_thunk_runtime=false",
            "--xla_cpu_experimental_onednn_fusion_type=dot",
            "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
        ],
    )
    parser.add_argument("--flag-repeats", type=int, default=2)
    parser.add_argument("--machine", default=None)
    parser.add_argument("--json", action="store_true", help="print only the JSON, on one line")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="JSON file; sections already in it and not run now are kept",
    )
    args = parser.parse_args()
    formulations = [tuple(f.split("/")) for f in args.formulations]

    cpu = platform.processor() or platform.machine()
    if args.machine is None and pathlib.Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln]
        cpu = f"{names[0]} x {len(names)} logical CPUs" if names else cpu
    result = {
        "benchmark": "conv_formulations",
        "machine": args.machine or cpu,
        "load_average_at_start": os.getloadavg(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "auto": {
            "conv_impl": conv.resolve_impl("auto"),
            "norm_impl": batch_norm.resolve_impl("auto"),
        },
        "rounds": args.rounds,
    }
    log = (lambda *a, **k: None) if args.json else print
    if "layers" in args.sections:
        result["layers"] = [r for d in args.layer_dtypes for r in layers(d, args.rounds)]
        log("layers done", flush=True)
    if "step" in args.sections:
        result["step"] = [
            r for p in args.pairs for r in steps(args.dtypes, formulations, p, args.rounds)
        ]
        log("step done", flush=True)
    if "embed" in args.sections:
        result["embed"] = embeds(args.dtypes, formulations, args.embed_batch, args.rounds)
        log("embed done", flush=True)
    if "flags" in args.sections:
        result["flags"] = flags(
            args.flag_variants, args.dtypes, args.pairs, args.rounds, args.flag_repeats
        )
    result["load_average_at_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(result))
        return
    _print_tables(result)
    start, end = result["load_average_at_start"], result["load_average_at_end"]
    print(f"\nload average: start {start}, end {end}")
    if args.out is not None:
        meta = {k: result[k] for k in ("load_average_at_start", "load_average_at_end", "rounds")}
        result["runs"] = {section: meta for section in args.sections}
        if args.out.exists():  # keep the sections not run now
            previous = json.loads(args.out.read_text())
            result["runs"] = {**previous.get("runs", {}), **result["runs"]}
            result = {**previous, **result}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
