"""The pclr-jax contender of ``pclr bench``: each workload through the library's real code path.

* ``train``: :func:`pclr_jax.train_step.make_train_step` (both views in one forward pass, NT-Xent
  t=0.1, Adam, gradient clipping at norm 1), compiled ahead of time, on random ``(pairs, samples,
  leads)`` views. A step on ``B`` pairs processes ``2B`` ECGs (forward and backward).
* ``embed``: :meth:`pclr_jax.Encoder.embed` (the pooled ``embed`` output, no head, as the released
  graphs) on ``batch_size`` random ECGs in one call, host to host.
* ``loss``: the ``ntxent`` loss of the losses registry, value and gradient with respect to both
  views' ``(pairs, head_sizes[-1])`` projections; "ECGs" are its ``2B`` rows.
* ``loader``: :func:`pclr_jax.data.loader.make_pair_loader` (2 read threads, no augmentation) over
  an ArrayRecord file of random float16 ECGs written to a temporary directory (2 per patient);
  a step is one batch of ``B`` pairs.

The model is described by ``--arch``, the JSON of :func:`arch_spec` (an ``EncoderConfig`` plus
the per-unit strides), so the peers build exactly the same network. Run as
``python -m pclr_jax.benchmarking.workloads --workload train --arch '...' --batch-pairs 32``
(see :mod:`pclr_jax.benchmarking.protocol`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from pclr_jax.benchmarking import protocol
from pclr_jax.model import EncoderConfig

# Architectures by name; ``--samples`` rescales the units (each a stride of 4).
PRESETS = {
    "full": {},  # the released 12-lead model, head 320-320: 6,600,352 parameters
    "small": dict(stem_filters=32, unit_filters=(64, 96, 128, 160), head_sizes=(160, 160)),
    "tiny": dict(stem_filters=8, unit_filters=(8, 12, 16, 20), head_sizes=(16, 16)),
}
DEFAULT_SAMPLES = {"full": 4096, "small": 1024, "tiny": 256}


def encoder_config(preset: str = "full", samples: int | None = None, dtype: str = "fp32"):
    """The ``EncoderConfig`` of a preset with ``samples`` input samples (>= 256, four units of
    stride 4) and compute ``dtype`` (``fp32``/``bf16``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown config {preset!r}; choose from {sorted(PRESETS)}")
    samples = samples or DEFAULT_SAMPLES[preset]
    if samples < 256:
        raise ValueError(f"--samples {samples}: at least 256 (four units of stride 4)")
    units = tuple(samples // 4 ** (i + 1) for i in range(4))
    return EncoderConfig(
        n_samples=samples,
        unit_samples=units,
        dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype],
        **PRESETS[preset],
    )


def arch_spec(config: EncoderConfig) -> dict:
    """What a peer needs to rebuild the model: the config's fields plus ``downsample``."""
    spec = config.to_dict()
    spec["downsample"] = list(config.downsample)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}


def config_from_spec(spec: dict) -> EncoderConfig:
    spec = {k: v for k, v in spec.items() if k != "downsample"}
    return EncoderConfig.from_dict(spec)


def _optimizer(pairs: int):
    from pclr_jax.optimizers import fixed_adam_config, make_optimizer

    return make_optimizer(fixed_adam_config(), pairs, total_steps=1000)[0]


def setup_train(config: EncoderConfig, pairs: int, seed: int):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from pclr_jax.benchmarking.flops import cost_flops
    from pclr_jax.distributed import make_mesh
    from pclr_jax.losses import get_loss
    from pclr_jax.model import count_parameters
    from pclr_jax.train_state import create_train_state
    from pclr_jax.train_step import make_train_step

    mesh = make_mesh()
    if pairs % mesh.size:
        raise SystemExit(f"{pairs} pairs do not divide over {mesh.size} devices")
    optimizer = _optimizer(pairs)
    state = create_train_state(config, get_loss("ntxent"), optimizer, jax.random.key(seed), mesh)
    n_params = count_parameters({"p": state.params["model"], "s": state.batch_stats})
    step_fn = make_train_step(config, "ntxent", {"temperature": 0.1}, optimizer, mesh)
    rng = np.random.default_rng(seed)
    shape = (pairs, config.n_samples, config.n_leads)
    batch = jax.device_put(
        {
            "view_a": rng.normal(size=shape).astype(np.float32),
            "view_b": rng.normal(size=shape).astype(np.float32),
            "patient_id": np.arange(pairs, dtype=np.int32),
        },
        NamedSharding(mesh, P("data")),
    )
    info = {"n_params": n_params, "ecgs_per_step": 2 * pairs, "devices": mesh.size}
    holder = {"state": state}

    def step():  # compiles on the first call (timed as the first call)
        if "compiled" not in holder:
            start = time.perf_counter()
            holder["compiled"] = step_fn.lower(holder["state"], batch).compile()
            info["compile_s"] = time.perf_counter() - start
            info["flops_per_step"] = cost_flops(holder["compiled"])
        holder["state"], metrics = holder["compiled"](holder["state"], batch)
        jax.block_until_ready(metrics)

    return step, info, holder


def setup_embed(config: EncoderConfig, batch_size: int, seed: int):
    import jax

    from pclr_jax.benchmarking.flops import cost_flops
    from pclr_jax.embedder import Encoder
    from pclr_jax.model import count_parameters, init_variables

    bare = init_variables(config, jax.random.key(seed), with_head=False)
    variables = {name: {"encoder": tree} for name, tree in bare.items()}
    # One device, as the peers run: Encoder's default splits batches over all local devices.
    encoder = Encoder(
        config.replace(head_sizes=()), variables, "embed", batch_size, jax.local_devices()[:1]
    )
    x = np.random.default_rng(seed).normal(0, 0.5, (batch_size, config.n_samples, config.n_leads))
    x = x.astype(np.float32)
    flops = cost_flops(encoder._forward.lower(encoder._variables, x))

    def step():
        encoder.embed(x)

    info = {
        "n_params": count_parameters(variables),
        "ecgs_per_step": batch_size,
        "flops_per_step": flops,
    }
    return step, info, {}


def setup_loss(config: EncoderConfig, pairs: int, seed: int):
    import jax
    import jax.numpy as jnp

    from pclr_jax.benchmarking.flops import cost_flops
    from pclr_jax.losses import get_loss

    dim = config.head_sizes[-1] if config.head_sizes else config.embed_dim
    rng = np.random.default_rng(seed)
    z_a = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
    z_b = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
    ids = jnp.arange(pairs, dtype=jnp.int32)
    loss = get_loss("ntxent", temperature=0.1)
    params = loss.init_params()
    grad_fn = jax.jit(jax.value_and_grad(lambda a, b: loss(a, b, ids, params)[0], argnums=(0, 1)))
    info = {"n_params": 0, "ecgs_per_step": 2 * pairs, "dim": dim}
    holder: dict = {}

    def step():
        if "compiled" not in holder:
            start = time.perf_counter()
            holder["compiled"] = grad_fn.lower(z_a, z_b).compile()
            info["compile_s"] = time.perf_counter() - start
            info["flops_per_step"] = cost_flops(holder["compiled"])
        jax.block_until_ready(holder["compiled"](z_a, z_b))

    return step, info, holder


def setup_loader(config: EncoderConfig, pairs: int, seed: int):
    import pandas as pd
    from array_record.python.array_record_module import ArrayRecordWriter

    from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader

    n_records = max(512, 4 * pairs)
    shape = (config.n_samples, config.n_leads)
    directory = tempfile.TemporaryDirectory(prefix="pclr_bench_loader_")
    path = f"{directory.name}/ecgs.array_record"
    writer = ArrayRecordWriter(path, "group_size:1")
    rng = np.random.default_rng(seed)
    for _ in range(n_records):
        writer.write(rng.standard_normal(shape, np.float32).astype(np.float16).tobytes())
    writer.close()
    record_ids = np.array([f"r{i:06d}" for i in range(n_records)])

    class Source:
        def __init__(self):
            import grain

            self.records = grain.sources.ArrayRecordDataSource(path)

        def __len__(self):
            return len(self.records)

        def __getitem__(self, key):
            ecg = np.frombuffer(self.records[key], np.float16).reshape(shape)
            return {"ecg": ecg, "record_id": record_ids[key]}

    index = pd.DataFrame({"record_id": record_ids, "patient_id": np.arange(n_records) // 2})
    split = SimpleNamespace(source=Source(), index=index.astype({"patient_id": str}))
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=pairs, seed=seed), 0, 1)

    def step():
        next(loader)

    info = {"n_params": 0, "ecgs_per_step": 2 * pairs, "records": n_records}
    return step, info, {"tmp": directory, "loader": loader}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the pclr-jax contender of pclr bench")
    protocol.add_workload_args(parser)
    args = parser.parse_args(argv)
    import jax

    from pclr_jax import __version__

    config = config_from_spec(json.loads(args.arch))
    holder: dict = {}

    def setup():
        if args.workload == "train":
            step, info, extra = setup_train(config, args.batch_pairs, args.seed)
        elif args.workload == "embed":
            step, info, extra = setup_embed(
                config, args.batch_size or 2 * args.batch_pairs, args.seed
            )
        elif args.workload == "loss":
            step, info, extra = setup_loss(config, args.batch_pairs, args.seed)
        else:
            step, info, extra = setup_loader(config, args.batch_pairs, args.seed)
        holder.update(extra)
        info["framework"] = f"pclr-jax {__version__}, JAX {jax.__version__} (XLA)"
        return step, info  # the step adds flops_per_step to info when it compiles

    protocol.run_contender(args, setup)


if __name__ == "__main__":
    main()
