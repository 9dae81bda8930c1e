"""The training step: one jitted function, per-device code under ``jax.shard_map`` over ``'data'``.

Per device, with ``b`` local pairs of the global batch of ``G = b x devices`` pairs:

1. Both views run through the model as ONE batch of ``2b`` ECGs (view a's rows, then view b's),
   in training mode. This is what ml4h's PCLR did (its Keras batch held both views, the loss
   split it in halves), so batch norm normalises each view with statistics of both; with global
   batch norm (``sync_batch_norm=True``, the default, as SimCLR) the statistics are averaged over
   all ``2G`` ECGs of all devices, and the step is the same function of the global batch whatever
   the device count.
2. The projections, cast to float32, go to the loss, which scores this device's rows against the
   columns gathered from every device. The differentiated function is ``lax.pmean`` of the local
   loss, i.e. the global loss: its gradient with respect to the (replicated) parameters is the
   global gradient, identical on every device. (Under ``shard_map``'s default ``check_vma``, the
   gradient of a device-LOCAL loss with respect to replicated parameters is already summed over
   devices; ``pmean``-ing that afterwards would return the sum, ``devices`` times too large.)
3. Optional gradient caching replaces 1-2 (``pclr_jax.step.gradcache``).
4. The optax update runs on every device on identical values (parameters stay replicated).
   Per-device batch statistics (``sync_batch_norm=False``) are averaged over devices for the
   running averages, so the state stays replicated; with global batch norm they already agree.
5. Metrics (loss, the loss's metrics, learning rate, gradient norm before clipping) are global
   means, replicated.
6. With ``control`` (the training loop's), the step also agrees on a stop: each process's
   signal flag arrives on its devices and one ``lax.pmax`` over ``'data'`` returns the same
   answer everywhere (``stop_signal``); and it carries ``nonfinite_step``, the first step whose
   loss was not finite, from step to step on the devices. The host reads both only when it
   fetches metrics (``pclr_jax.training.step_metrics``), so no step waits for the host.

Dropout keys: the state's key, folded with the step and then with the device index (and, with
gradient caching, the micro-batch index).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import ContrastiveLoss
from pclr_jax.model.encoder import EncoderConfig, PCLRModel
from pclr_jax.runtime.distributed import DATA_AXIS
from pclr_jax.runtime.layout import to_lane_dense
from pclr_jax.step import gradcache
from pclr_jax.step.optimizers import current_learning_rate
from pclr_jax.step.train_state import TrainState, replicated

BATCH_KEYS = ("view_a", "view_b", "patient_id")
# Stop codes: (devices - device index) * STOP_CODE_BASE + signal number, so that the largest code
# names the lowest-numbered device (hence process) holding a signal. Signal numbers are < 128.
STOP_CODE_BASE = 128

Batch = Mapping[str, jax.Array]
Control = Mapping[str, jax.Array]
TrainStep = Callable[..., tuple[TrainState, dict[str, jax.Array]]]


def make_forward(model: PCLRModel) -> gradcache.Forward:
    """The model in training mode: ``(params, batch_stats, ecgs, dropout_key) -> (z, stats)``.

    ``ecgs`` ``(n, samples, leads)`` in mV; ``z`` ``(n, head_sizes[-1])`` float32 projections.
    """

    def forward(
        model_params: Any, batch_stats: Any, ecgs: jax.Array, dropout_key: jax.Array
    ) -> tuple[jax.Array, Any]:
        (_, projection), updates = model.apply(
            {"params": model_params, "batch_stats": batch_stats},
            ecgs,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        return projection.astype(jnp.float32), updates["batch_stats"]

    return forward


def agree_on_stop(signals: jax.Array) -> jax.Array:
    """The stop signal every device agrees on, inside ``shard_map`` over ``'data'``.

    ``signals``: this device's ``(1,)`` int32 slice of the per-device flags (the signal number
    its process received, 0 for none). Returns a replicated int32 scalar: the signal of the
    lowest-numbered device holding one (so the lowest-numbered process's), 0 when none did. One
    ``lax.pmax`` of one int32 per device.
    """
    devices = lax.axis_size(DATA_AXIS)
    code = jnp.where(
        signals[0] > 0, (devices - lax.axis_index(DATA_AXIS)) * STOP_CODE_BASE + signals[0], 0
    )
    return lax.pmax(code, DATA_AXIS) % STOP_CODE_BASE


def _device_gradients(
    model_config: EncoderConfig,
    loss: ContrastiveLoss,
    sync_batch_norm: bool,
    grad_cache_microbatch: int | None,
) -> Callable[[TrainState, Batch], tuple[tuple[jax.Array, dict], Any, Any]]:
    """The per-device part of a step before the update, for use under ``shard_map`` over
    ``'data'``: ``(state, local batch) -> ((global loss, local loss metrics), global gradients,
    this device's new batch statistics)``. Shared by :func:`make_train_step` and
    :func:`make_gradient_fn`, so that both see the same loss, dropout keys and gradients."""
    if model_config.dtype == "float16":
        raise ValueError(
            "model.dtype='float16' cannot train without loss scaling, which pclr-jax does not "
            "do: float16 flushes gradients below 6e-8 to zero and overflows above 65504. Use "
            "'bfloat16' (float32's range, as fast on GPUs since Ampere and on TPUs) or 'float32'"
        )
    loss = loss.on_axis(DATA_AXIS)
    model = PCLRModel(model_config, bn_axis_name=DATA_AXIS if sync_batch_norm else None)
    forward = make_forward(model)

    def global_loss(z_a, z_b, patient_ids, loss_params):
        local, metrics = loss(z_a, z_b, patient_ids, loss_params)
        return lax.pmean(local, DATA_AXIS), metrics

    def direct_value_and_grad(params, batch_stats, view_a, view_b, patient_ids, device_key):
        pairs = view_a.shape[0]

        def objective(params):
            ecgs = jnp.concatenate([view_a, view_b], axis=0)
            key = gradcache.microbatch_key(device_key, 0)
            z, new_stats = forward(params["model"], batch_stats, ecgs, key)
            value, metrics = global_loss(z[:pairs], z[pairs:], patient_ids, params["loss"])
            return value, (metrics, new_stats)

        (value, (metrics, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return (value, metrics), grads, new_stats

    def cached_value_and_grad(params, batch_stats, view_a, view_b, patient_ids, device_key):
        return gradcache.cached_value_and_grad(
            forward,
            lambda z_a, z_b, loss_params: global_loss(z_a, z_b, patient_ids, loss_params),
            params,
            batch_stats,
            view_a,
            view_b,
            device_key,
            grad_cache_microbatch,
            axis_name=DATA_AXIS,
        )

    value_and_grad = (
        direct_value_and_grad if grad_cache_microbatch is None else cached_value_and_grad
    )

    def as_ecgs(view: jax.Array) -> jax.Array:
        """A device's views as the model's input ``(b, samples, leads)`` float32 (exact from
        float16, as stored; any layout of ``samples x leads`` values per row, e.g. lane-dense)."""
        shape = (view.shape[0], model_config.n_samples, model_config.n_leads)
        return view.reshape(shape).astype(jnp.float32)

    def device_gradients(state: TrainState, batch: Batch):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        device_key = jax.random.fold_in(step_key, lax.axis_index(DATA_AXIS))
        return value_and_grad(
            state.params,
            state.batch_stats,
            as_ecgs(batch["view_a"]),
            as_ecgs(batch["view_b"]),
            batch["patient_id"],
            device_key,
        )

    return device_gradients


def make_train_step(
    model_config: EncoderConfig,
    loss: ContrastiveLoss,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    sync_batch_norm: bool = True,
    grad_cache_microbatch: int | None = None,
) -> TrainStep:
    """The jitted training step ``step(state, batch) -> (state, metrics)``; ``state`` is donated.

    Args:
      model_config: the model (``dtype='bfloat16'`` for bf16 compute; parameters, optimizer
        state, batch statistics and the loss stay float32).
      loss: from :func:`pclr_jax.losses.get_loss`, the same object that
        :func:`~pclr_jax.step.train_state.create_train_state` initialised the state's loss
        parameters with (its ``axis_name`` is set to the mesh's ``'data'`` axis here).
      optimizer: from :func:`pclr_jax.step.optimizers.make_optimizer` (its state carries the
        learning rate reported in the metrics).
      mesh: the ``'data'`` mesh; the state is replicated on it.
      sync_batch_norm: average batch statistics over all devices (global batch norm); False for
        per-device statistics.
      grad_cache_microbatch: None for the direct step; otherwise pairs per micro-batch per device
        for gradient caching (must divide the per-device batch; see ``pclr_jax.step.gradcache``).

    The returned ``step(state, batch, control=None)`` takes ``batch = {'view_a': (G, samples, leads)
    mV, 'view_b': (G, samples, leads), 'patient_id': (G,) int32}`` sharded ``P('data')`` (G global
    pairs, divisible by the device count; other array-valued keys are ignored). A view may hold each
    ECG's ``samples x leads`` values in any shape, e.g. lane-dense ``(G, samples x leads / 128,
    128)`` as the feeds send them (:mod:`pclr_jax.runtime.layout`); the step reshapes. The views may
    be float16 (as stored and as the feeds send them: half the bytes of float32) or float32; the
    step casts them to float32 inside its compiled program, exactly. (The batch is not donated: no
    output has its shape, so JAX would drop the donation with a warning; the loop keeps no reference
    to a batch, so its memory returns when the step has run.) It returns global, replicated float32
    scalar metrics: ``loss``, the loss's own metrics (e.g. ``contrastive_accuracy``),
    ``learning_rate`` (used by this update) and ``grad_norm`` (global norm before clipping).

    ``control`` (the training loop's; optional) is ``{'signals': (devices,) int32 sharded
    P('data'), the signal number each device's process received (0: none), 'nonfinite_step': ()
    int32 replicated, the first step whose loss was not finite (0: none so far)}``; with it the
    metrics also hold int32 ``stop_signal`` (:func:`agree_on_stop`) and ``nonfinite_step`` (the
    input's, or this step's number ``state.step + 1`` if it is the first non-finite loss).

    Raises:
      ValueError: ``model_config.dtype == 'float16'``: training in float16 needs loss scaling,
        which this step does not do (use ``'bfloat16'``).
    """
    device_gradients = _device_gradients(model_config, loss, sync_batch_norm, grad_cache_microbatch)

    def per_device(
        state: TrainState, batch: Batch, control: Control | None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        (value, loss_metrics), grads, batch_stats = device_gradients(state, batch)
        batch_stats = lax.pmean(batch_stats, DATA_AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        metrics = {
            "loss": value,
            **lax.pmean(loss_metrics, DATA_AXIS),
            "learning_rate": current_learning_rate(opt_state),
            "grad_norm": optax.tree.norm(grads),
        }
        if control is not None:
            first_bad = jnp.where(jnp.isfinite(value), 0, new_state.step).astype(jnp.int32)
            previous = control["nonfinite_step"]
            metrics["nonfinite_step"] = jnp.where(previous > 0, previous, first_bad)
            metrics["stop_signal"] = agree_on_stop(control["signals"])
        return new_state, metrics

    def step(
        state: TrainState, batch: Batch, control: Control | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        control_specs = None
        if control is not None:
            control_specs = {"signals": P(DATA_AXIS), "nonfinite_step": P()}
        sharded = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS), control_specs),
            out_specs=(P(), P()),
        )
        return sharded(state, {key: batch[key] for key in BATCH_KEYS}, control)

    return jax.jit(step, donate_argnums=0)


def make_gradient_fn(
    model_config: EncoderConfig,
    loss: ContrastiveLoss,
    mesh: Mesh,
    sync_batch_norm: bool = True,
    grad_cache_microbatch: int | None = None,
) -> Callable[[TrainState, Batch], tuple[dict[str, jax.Array], Any]]:
    """``gradients(state, batch) -> (metrics, grads)``: what :func:`make_train_step` with the same
    arguments computes before its optimizer update, without updating (``state`` is not donated).

    ``grads`` has the structure of ``state.params`` (``{'model': ..., 'loss': ...}``): the gradient
    of the global loss, float32, replicated, before clipping (the step's ``grad_norm`` is its global
    norm). ``metrics`` holds ``loss`` and the loss's own metrics. For studying a loss variant's
    gradients, or checking them against another implementation; the batch is as for the step.
    """
    device_gradients = _device_gradients(model_config, loss, sync_batch_norm, grad_cache_microbatch)

    def per_device(state: TrainState, batch: Batch):
        (value, loss_metrics), grads, _ = device_gradients(state, batch)
        return {"loss": value, **lax.pmean(loss_metrics, DATA_AXIS)}, grads

    def gradients(state: TrainState, batch: Batch):
        sharded = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P())
        )
        return sharded(state, {key: batch[key] for key in BATCH_KEYS})

    return jax.jit(gradients)


def _on_mesh(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` (host or device array) placed with ``sharding``, from every process's copy."""
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, host.__getitem__)


def make_embed_fn(
    model_config: EncoderConfig, mesh: Mesh
) -> Callable[[dict, np.ndarray], np.ndarray]:
    """``embed(variables, ecgs) -> (N, embed_dim)`` float32 pooled embeddings, in eval mode.

    ``variables`` are ``{'params': model params, 'batch_stats': ...}`` (e.g. ``{'params':
    state.params['model'], 'batch_stats': state.batch_stats}``), on the mesh or on the host;
    ``ecgs`` ``(N, samples, leads)`` in mV, a host array holding the same values on every process.
    The ECGs are split over the mesh's devices (padded to a multiple of the device count); every
    process gets all ``N`` embeddings as a NumPy array.
    """
    model = PCLRModel(model_config)
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    apply = jax.jit(
        lambda variables, ecgs: model.apply(variables, ecgs, method=PCLRModel.embed),
        out_shardings=replicated(mesh),
    )

    def embed(variables: dict, ecgs: np.ndarray) -> np.ndarray:
        ecgs = np.asarray(ecgs, np.float32)
        n = ecgs.shape[0]
        padded = np.pad(ecgs, [(0, -n % mesh.size), (0, 0), (0, 0)])
        variables = jax.tree.map(lambda x: _on_mesh(x, replicated(mesh)), variables)
        return np.asarray(apply(variables, _on_mesh(padded, batch_sharding)))[:n]

    return embed


def make_local_embed_fn(
    model_config: EncoderConfig, mesh: Mesh
) -> Callable[[dict, np.ndarray], jax.Array]:
    """``embed(variables, local_ecgs) -> (B, embed_dim)`` float32 embeddings of one global batch
    of ``B`` ECGs, in eval mode, left on the devices (sharded ``P('data')``).

    ``local_ecgs``: THIS process's ``B / processes`` consecutive ECGs of the global batch (the
    processes' shares in process order make it up), ``(rows, samples, leads)`` mV in float16 (as
    stored; cast on the devices) or float32, sent lane-dense (:mod:`pclr_jax.runtime.layout`); ``B``
    must divide over the mesh. Nothing is read back:
    :func:`pclr_jax.training.periodic_eval.embed_split` gathers a whole split's embeddings once.
    ``variables`` as for :func:`make_embed_fn`.
    """
    model = PCLRModel(model_config)
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    shape = (model_config.n_samples, model_config.n_leads)
    apply = jax.jit(
        lambda variables, ecgs: model.apply(
            variables,
            ecgs.reshape(ecgs.shape[0], *shape).astype(jnp.float32),
            method=PCLRModel.embed,
        ),
        out_shardings=batch_sharding,
    )

    def embed(variables: dict, local_ecgs: np.ndarray) -> jax.Array:
        variables = jax.tree.map(lambda x: _on_mesh(x, replicated(mesh)), variables)
        dense = to_lane_dense(np.asarray(local_ecgs))
        return apply(variables, jax.make_array_from_process_local_data(batch_sharding, dense))

    return embed
