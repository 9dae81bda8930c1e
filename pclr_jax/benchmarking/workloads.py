"""The pclr-jax contender of ``pclr bench``: each workload through the library's real code path.

* ``train``: :func:`pclr_jax.step.train_step.make_train_step` (both views in one forward pass,
  NT-Xent t=0.1, Adam, gradient clipping at norm 1), compiled ahead of time, on random
  ``(pairs, samples, leads)`` views generated on the devices (:func:`random_on_device`). A step
  on ``B`` pairs processes ``2B`` ECGs (forward and backward).
* ``embed``: :meth:`pclr_jax.Encoder.embed` (the pooled ``embed`` output, no head, as the released
  graphs) on ``batch_size`` random ECGs in one call, host to host.
* ``loss``: the ``ntxent`` loss of the losses registry, value and gradient with respect to both
  views' ``(pairs, head_sizes[-1])`` projections; "ECGs" are its ``2B`` rows.
* ``loader``: :func:`pclr_jax.data.loader.make_pair_loader` (2 read threads, no augmentation) over
  an ArrayRecord file of random float16 ECGs written to a temporary directory (2 per patient);
  a step is one batch of ``B`` pairs.

``train``, ``embed`` and ``loss`` are compiled before their inputs exist, and XLA's memory plan
of the compiled program is checked against the memory available
(:func:`pclr_jax.benchmarking.memory.check_fits`): a batch beyond it ends the contender with
``protocol.DOES_NOT_FIT_EXIT_CODE`` and a message naming ``--chunk-size`` (loss), gradient
caching (train) or a smaller batch (embed). ``--devices N`` spreads ``train`` and ``embed`` over
the first N devices of JAX's default backend (default 1; 0 for all). FLOPs per step: the
analytic count of the model (:func:`pclr_jax.benchmarking.flops.train_flops_per_ecg`,
``forward_flops_per_ecg``) for ``train`` and ``embed``, XLA's cost analysis over all devices for
``loss`` (:func:`pclr_jax.benchmarking.flops.step_flops`; None where XLA has no count).

The model is described by ``--arch``, the JSON of :func:`arch_spec` (an ``EncoderConfig`` plus
the per-unit strides), so the peers build exactly the same network. Run as
``python -m pclr_jax.benchmarking.workloads --workload train --arch '...' --batch-pairs 32``
(see :mod:`pclr_jax.benchmarking.protocol`).
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from pclr_jax.benchmarking import protocol
from pclr_jax.model.encoder import EncoderConfig

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
    from pclr_jax.step.optimizers import fixed_adam_config, make_optimizer

    return make_optimizer(fixed_adam_config(), pairs, total_steps=1000)[0]


GRAD_CACHE_HINT = (
    "Gradient caching trains the same batch in micro-batches with the same loss and gradients: "
    "train with --config.grad_cache_microbatch=M (pclr_jax.step.gradcache, docs/training_step.md), "
    "and measure it with pclr bench train --grad-cache-microbatch M; or bench a smaller "
    "--batch-pairs."
)
CHUNK_HINT = (
    "The chunked loss never holds the (rows x columns) similarity matrix: rerun with "
    "--chunk-size N (e.g. --chunk-size 1024), or a smaller --batch-pairs."
)


def bench_devices(count: int) -> list:
    """The first ``count`` devices of JAX's default backend (0: all of them)."""
    import jax

    devices = jax.devices()
    if count > len(devices):
        protocol.refuse(
            2, f"--devices {count}: only {len(devices)} {devices[0].platform} device(s)"
        )
    return devices[:count] if count else devices


def _loss_hparams(chunk_size: int) -> dict:
    return {"temperature": 0.1, **({"chunk_size": chunk_size} if chunk_size else {})}


def lower_train_step(
    config: EncoderConfig,
    pairs: int,
    devices: list,
    seed: int = 0,
    chunk_size: int = 0,
    grad_cache_microbatch: int = 0,
):
    """The training step of ``pairs`` global pairs over ``devices``, lowered for a batch it has
    not allocated yet: ``(lowered, state, abstract_batch, n_params)``. ``abstract_batch`` holds
    ``jax.ShapeDtypeStruct`` leaves with their shardings: views ``(pairs, samples, leads)``
    float32 and ``patient_id`` ``(pairs,)`` int32, split over the devices."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from pclr_jax.losses import get_loss
    from pclr_jax.model.encoder import count_parameters
    from pclr_jax.runtime.distributed import make_mesh
    from pclr_jax.step.train_state import create_train_state
    from pclr_jax.step.train_step import make_train_step

    mesh = make_mesh(devices)
    if pairs % mesh.size:
        protocol.refuse(2, f"{pairs} pairs do not divide over {mesh.size} devices")
    optimizer = _optimizer(pairs)
    state = create_train_state(config, get_loss("ntxent"), optimizer, jax.random.key(seed), mesh)
    n_params = count_parameters({"p": state.params["model"], "s": state.batch_stats})
    step_fn = make_train_step(
        config,
        get_loss("ntxent", **_loss_hparams(chunk_size)),
        optimizer,
        mesh,
        grad_cache_microbatch=grad_cache_microbatch or None,
    )
    sharding = NamedSharding(mesh, P("data"))
    view = jax.ShapeDtypeStruct((pairs, config.n_samples, config.n_leads), jnp.float32)
    abstract_batch = {
        "view_a": jax.ShapeDtypeStruct(view.shape, view.dtype, sharding=sharding),
        "view_b": jax.ShapeDtypeStruct(view.shape, view.dtype, sharding=sharding),
        "patient_id": jax.ShapeDtypeStruct((pairs,), jnp.int32, sharding=sharding),
    }
    return step_fn.lower(state, abstract_batch), state, abstract_batch, n_params


def compile_train_step(
    config: EncoderConfig,
    pairs: int,
    devices: list,
    seed: int = 0,
    chunk_size: int = 0,
    grad_cache_microbatch: int = 0,
):
    """:func:`lower_train_step`, compiled: ``(compiled, state, abstract_batch, n_params,
    compile_s)``."""
    lowered, state, abstract_batch, n_params = lower_train_step(
        config, pairs, devices, seed, chunk_size, grad_cache_microbatch
    )
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, state, abstract_batch, n_params, time.perf_counter() - start


def random_program(abstract):
    """A jitted program ``key -> arrays`` shaped, typed and sharded as ``abstract``'s leaves
    (``jax.ShapeDtypeStruct`` with shardings), made on their devices: floating leaves ``N(0, 1)``
    (times ``scale``, its second argument), integer leaves ``0, 1, 2, ...`` along their first
    axis. Its only input is the PRNG key: no host array of the batch's size is made or copied."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(abstract)

    def make(key, scale):
        arrays = []
        for leaf_key, leaf in zip(jax.random.split(key, len(leaves)), leaves, strict=True):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                noise = jax.random.normal(leaf_key, leaf.shape, jnp.float32)
                arrays.append((scale * noise).astype(leaf.dtype))
            else:
                ramp = jnp.arange(leaf.shape[0], dtype=leaf.dtype)
                ramp = ramp.reshape(-1, *[1] * (leaf.ndim - 1))
                arrays.append(jnp.broadcast_to(ramp, leaf.shape))
        return jax.tree.unflatten(treedef, arrays)

    shardings = jax.tree.unflatten(treedef, [leaf.sharding for leaf in leaves])
    return jax.jit(make, out_shardings=shardings, static_argnums=1)


def random_on_device(abstract, seed: int = 0, scale: float = 1.0):
    """Arrays like ``abstract``'s leaves, made on their devices by :func:`random_program`."""
    import jax

    return random_program(abstract)(jax.random.key(seed), scale)


def _fits_or_refuse(compiled, devices: list, limit_gib: float, remedy: str) -> dict:
    from pclr_jax.benchmarking.memory import DoesNotFit, check_fits

    try:
        return check_fits(compiled, devices[0], limit_gib or None, remedy)
    except DoesNotFit as error:
        protocol.refuse(protocol.DOES_NOT_FIT_EXIT_CODE, str(error))


def setup_train(config: EncoderConfig, args: argparse.Namespace):
    """The training step, compiled and checked to fit (module docstring) before its batch is
    allocated: a batch beyond memory is refused with a pointer to gradient caching. The batch is
    generated on the devices (:func:`random_on_device`)."""
    import jax

    from pclr_jax.benchmarking.flops import train_flops_per_ecg

    pairs, devices = args.batch_pairs, bench_devices(args.devices)
    compiled, state, abstract_batch, n_params, compile_s = compile_train_step(
        config, pairs, devices, args.seed, args.chunk_size, args.grad_cache_microbatch
    )
    memory = _fits_or_refuse(compiled, devices, args.memory_limit_gib, GRAD_CACHE_HINT)
    batch = random_on_device(abstract_batch, args.seed)
    info = {
        "n_params": n_params,
        "ecgs_per_step": 2 * pairs,
        "devices": len(devices),
        "compile_s": compile_s,
        "flops_per_step": train_flops_per_ecg(config) * 2 * pairs,
        **memory,
    }
    holder = {"state": state}

    def step():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics)

    return step, info, holder


def compile_embed(config: EncoderConfig, batch_size: int, devices: list, seed: int = 0):
    """The embedding program of :class:`pclr_jax.embedding.embedder.Encoder` (pooled ``embed``
    output, no head, randomly initialised weights) for ``batch_size`` ECGs (rounded up to a
    multiple of the devices), compiled: ``(encoder, forward, compiled, abstract_batch,
    n_params)``. ``abstract_batch``: ``(batch, samples, leads)`` float32 split over the devices;
    ``forward(ecgs)`` runs ``compiled`` on such a device array, ``encoder.embed`` on a host
    array (both the same program: no second compilation)."""
    import jax

    from pclr_jax.embedding.embedder import Encoder
    from pclr_jax.model.encoder import count_parameters, init_variables

    bare = init_variables(config, jax.random.key(seed), with_head=False)
    variables = {name: {"encoder": tree} for name, tree in bare.items()}
    encoder = Encoder(
        config.replace(head_sizes=()),
        variables,
        output="embed",
        batch_size=batch_size,
        devices=devices,
    )
    batch_size = encoder._step_size(batch_size)  # a multiple of the device count
    shape = (batch_size, config.n_samples, config.n_leads)
    abstract = jax.ShapeDtypeStruct(shape, np.float32, sharding=encoder._batch_sharding)
    compiled = encoder._forward.lower(encoder._variables, abstract).compile()
    encoder._forward = compiled  # the same program: Encoder.embed calls it, no second compile
    forward = functools.partial(compiled, encoder._variables)
    return encoder, forward, compiled, abstract, count_parameters(variables)


def setup_embed(config: EncoderConfig, args: argparse.Namespace):
    """``Encoder.embed`` on a host array, host to host (as Keras ``predict`` is timed)."""
    from pclr_jax.benchmarking.flops import forward_flops_per_ecg

    batch_size, devices = args.batch_size or 2 * args.batch_pairs, bench_devices(args.devices)
    encoder, _, compiled, abstract, n_params = compile_embed(config, batch_size, devices, args.seed)
    remedy = "Embed in smaller calls: a smaller --batch-size."
    memory = _fits_or_refuse(compiled, devices, args.memory_limit_gib, remedy)
    x = np.random.default_rng(args.seed).normal(0, 0.5, abstract.shape).astype(np.float32)

    def step():
        encoder.embed(x)

    info = {
        "n_params": n_params,
        "ecgs_per_step": abstract.shape[0],
        "devices": len(devices),
        "flops_per_step": forward_flops_per_ecg(config, with_head=False) * abstract.shape[0],
        **memory,
    }
    return step, info, {}


def setup_loss(config: EncoderConfig, args: argparse.Namespace):
    """NT-Xent value and gradient on one device, dense or ``--chunk-size`` columns at a time;
    refused before allocating when XLA's plan exceeds the memory (naming ``--chunk-size``)."""
    import jax
    import jax.numpy as jnp

    from pclr_jax.benchmarking.flops import step_flops
    from pclr_jax.losses import get_loss

    pairs, (device,) = args.batch_pairs, bench_devices(1)
    dim = config.head_sizes[-1] if config.head_sizes else config.embed_dim
    loss = get_loss("ntxent", **_loss_hparams(args.chunk_size))
    params = loss.init_params()
    ids = jnp.arange(pairs, dtype=jnp.int32)
    grad_fn = jax.jit(jax.value_and_grad(lambda a, b: loss(a, b, ids, params)[0], argnums=(0, 1)))
    view = jax.ShapeDtypeStruct((pairs, dim), jnp.float32)
    start = time.perf_counter()
    compiled = grad_fn.lower(view, view).compile()
    compile_s = time.perf_counter() - start
    hint = "" if args.chunk_size else CHUNK_HINT
    memory = _fits_or_refuse(compiled, [device], args.memory_limit_gib, hint or "A smaller chunk.")
    rng = np.random.default_rng(args.seed)
    z_a = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
    z_b = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
    info = {
        "n_params": 0,
        "ecgs_per_step": 2 * pairs,
        "dim": dim,
        "chunk_size": args.chunk_size or None,
        "devices": 1,
        "compile_s": compile_s,
        "flops_per_step": step_flops(compiled),
        **memory,
    }

    def step():
        jax.block_until_ready(compiled(z_a, z_b))

    return step, info, {}


def setup_loader(config: EncoderConfig, args: argparse.Namespace):
    import pandas as pd
    from array_record.python.array_record_module import ArrayRecordWriter

    from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader

    pairs, seed = args.batch_pairs, args.seed
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

    info = {"n_params": 0, "ecgs_per_step": 2 * pairs, "records": n_records, "devices": 0}
    return step, info, {"tmp": directory, "loader": loader}


SETUPS = {"train": setup_train, "embed": setup_embed, "loss": setup_loss, "loader": setup_loader}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the pclr-jax contender of pclr bench")
    protocol.add_workload_args(parser)
    parser.add_argument("--devices", type=int, default=1, help="devices to use (0: all)")
    parser.add_argument(
        "--grad-cache-microbatch", type=int, default=0, help="train: pairs per micro-batch"
    )
    args = parser.parse_args(argv)
    from pclr_jax.runtime import host_memory

    memory = host_memory.keep_freed_memory()  # before JAX's threads exist, as `pclr` does
    import jax

    from pclr_jax import __version__
    from pclr_jax.benchmarking.memory import device_peak_mib
    from pclr_jax.model import conv

    config = config_from_spec(json.loads(args.arch))
    holder: dict = {}

    def setup():
        step, info, extra = SETUPS[args.workload](config, args)
        holder.update(extra)
        # the convolution formulation the program uses ("auto" resolved: training or inference)
        impl = conv.resolve_impl(config.conv_impl, args.workload == "train", dtype=config.dtype)
        info["framework"] = f"pclr-jax {__version__}, JAX {jax.__version__} (XLA, conv {impl})"
        info["device"] = info["platform"] = jax.devices()[0].platform
        info["device_kind"] = jax.devices()[0].device_kind
        info["device_count"] = jax.device_count()
        info["host_memory"] = memory
        return step, info

    protocol.run_contender(args, setup, lambda: device_peak_mib(jax.devices()))


if __name__ == "__main__":
    main()
