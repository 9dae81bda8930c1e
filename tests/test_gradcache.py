"""Gradient caching gives exactly the gradient of plain autodiff of the same (micro-batch batch
norm) function, on one device and on 4 devices; with one micro-batch it is the direct step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import get_loss
from pclr_jax.model.encoder import EncoderConfig, PCLRModel
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.step import gradcache
from pclr_jax.step.optimizers import make_optimizer
from pclr_jax.step.train_state import create_train_state
from pclr_jax.step.train_step import make_forward, make_train_step

TINY = EncoderConfig(
    n_samples=128,
    unit_samples=(32, 16, 8, 4),
    unit_filters=(8, 16, 16, 24),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(16, 16),
)
PAIRS = 8
# Per array, relative to its largest entry: gradients of batch-normalised layers are sums of many
# cancelling float32 terms, so small entries carry the rounding of the large ones.
RTOL, ATOL = 1e-5, 1e-7


def _batch():
    rng = np.random.default_rng(3)
    shape = (PAIRS, TINY.n_samples, TINY.n_leads)
    patient = rng.normal(size=shape)
    return {
        "view_a": (patient + 0.5 * rng.normal(size=shape)).astype(np.float32),
        "view_b": (patient + 0.5 * rng.normal(size=shape)).astype(np.float32),
        "patient_id": np.arange(PAIRS, dtype=np.int32),
    }


def _variables(config):
    variables = PCLRModel(config).init(
        jax.random.key(0), jnp.zeros((1, config.n_samples, config.n_leads)), train=False
    )
    return variables["params"], variables["batch_stats"]


def _assert_trees_close(actual, expected):
    def check(path, a, e):
        a, e = np.asarray(a), np.asarray(e)
        scale = np.max(np.abs(e), initial=0.0)
        np.testing.assert_allclose(a, e, rtol=0, atol=RTOL * scale + ATOL, err_msg=str(path))

    jax.tree_util.tree_map_with_path(check, actual, expected)


def _ghost_reference(forward, loss, params, batch_stats, batch, key, chunks):
    """Plain autodiff of: each micro-batch through the model separately, one loss over all.

    ``chunks``: per micro-batch, the rows (pair indices) it holds; it runs as one forward pass of
    ``[view_a[rows], view_b[rows]]``. Returns ``(loss, grads, mean of the updated statistics)``.
    """

    def objective(params):
        z_a = [None] * PAIRS
        z_b = [None] * PAIRS
        stats = []
        for k, rows in enumerate(chunks):
            ecgs = jnp.concatenate([batch["view_a"][rows], batch["view_b"][rows]])
            z, new_stats = forward(params["model"], batch_stats, ecgs, jax.random.fold_in(key, k))
            stats.append(new_stats)
            for i, row in enumerate(rows):
                z_a[row], z_b[row] = z[i], z[len(rows) + i]
        value, _ = loss(jnp.stack(z_a), jnp.stack(z_b), batch["patient_id"], params["loss"])
        return value, jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0), *stats)

    (value, stats), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    return value, grads, stats


@pytest.mark.device_check
def test_gradcache_equals_autodiff_on_one_device():
    """SigLIP (learnable loss parameters) and dropout (masks must match across the passes)."""
    microbatch = 4
    config = TINY.replace(dropout=0.2)
    model_params, batch_stats = _variables(config)
    loss = get_loss("siglip")
    params = {"model": model_params, "loss": loss.init_params()}
    forward = make_forward(PCLRModel(config))
    batch, key = _batch(), jax.random.key(7)

    @jax.jit
    def cached(params, batch_stats, batch):
        return gradcache.cached_value_and_grad(
            forward,
            lambda z_a, z_b, loss_params: loss(z_a, z_b, batch["patient_id"], loss_params),
            params,
            batch_stats,
            batch["view_a"],
            batch["view_b"],
            key,
            microbatch,
        )

    (value, _), grads, stats = cached(params, batch_stats, batch)
    chunks = [list(range(s, s + microbatch)) for s in range(0, PAIRS, microbatch)]
    ref_value, ref_grads, ref_stats = _ghost_reference(
        forward, loss, params, batch_stats, batch, key, chunks
    )

    np.testing.assert_allclose(value, ref_value, rtol=RTOL)
    _assert_trees_close(grads, ref_grads)
    _assert_trees_close(stats, ref_stats)
    assert float(jnp.abs(grads["loss"]["bias"])) > 0  # the loss parameters get gradients


@pytest.mark.devices(4)
def test_gradcache_equals_autodiff_on_four_devices_with_global_batch_norm():
    """Micro-batch k of every device forms one batch-norm group (statistics over 4 devices)."""
    mesh = make_mesh(jax.devices()[:4])
    devices, local, microbatch = 4, PAIRS // 4, 1
    model_params, batch_stats = _variables(TINY)
    loss = get_loss("ntxent", axis_name="data")
    params = {"model": model_params, "loss": loss.init_params()}
    forward = make_forward(PCLRModel(TINY, bn_axis_name="data"))
    batch = _batch()

    def per_device(params, batch_stats, batch):
        def global_loss(z_a, z_b, loss_params):
            value, metrics = loss(z_a, z_b, batch["patient_id"], loss_params)
            return lax.pmean(value, "data"), metrics

        (value, _), grads, stats = gradcache.cached_value_and_grad(
            forward,
            global_loss,
            params,
            batch_stats,
            batch["view_a"],
            batch["view_b"],
            jax.random.key(0),
            microbatch,
            axis_name="data",
        )
        return value, grads, stats

    sharded = jax.jit(
        jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P(), P())
        )
    )
    value, grads, stats = sharded(
        params, batch_stats, jax.device_put(batch, NamedSharding(mesh, P("data")))
    )

    # Group k: pair k of each device's local rows, run together in a plain single-device model.
    chunks = [[d * local + k for d in range(devices)] for k in range(local // microbatch)]
    ref_value, ref_grads, ref_stats = _ghost_reference(
        make_forward(PCLRModel(TINY)),
        get_loss("ntxent"),
        params,
        batch_stats,
        batch,
        jax.random.key(0),
        chunks,
    )
    np.testing.assert_allclose(value, ref_value, rtol=RTOL)
    _assert_trees_close(grads, ref_grads)
    _assert_trees_close(stats, ref_stats)


def test_train_step_with_one_microbatch_equals_direct_step():
    mesh = make_mesh(jax.devices()[:2])
    opt_cfg = ml_collections.ConfigDict(
        dict(
            name="lars",
            learning_rate=0.1,
            lr_scaling="none",
            base_batch_pairs=256,
            warmup_steps=0,
            schedule="constant",
            weight_decay=0.0,
            grad_clip_norm=None,
            b1=0.9,
            b2=0.999,
            eps=1e-7,
        )
    )
    optimizer, _ = make_optimizer(opt_cfg, PAIRS, 10)
    batch = jax.device_put(_batch(), NamedSharding(mesh, P("data")))
    results = []
    for microbatch in (None, PAIRS // 2):
        state = create_train_state(TINY, get_loss("ntxent"), optimizer, jax.random.key(1), mesh)
        step = make_train_step(
            TINY, get_loss("ntxent"), optimizer, mesh, grad_cache_microbatch=microbatch
        )
        results.append(jax.device_get(step(state, batch)))
    (direct_state, direct_metrics), (cached_state, cached_metrics) = results
    _assert_trees_close(cached_state.params, direct_state.params)
    _assert_trees_close(cached_state.batch_stats, direct_state.batch_stats)
    _assert_trees_close(cached_metrics, direct_metrics)


def test_microbatch_must_divide_local_batch():
    with pytest.raises(ValueError, match="grad_cache_microbatch=3"):
        gradcache.split_microbatches(jnp.zeros((8, 4)), 3)
