"""The sharded training step against a plain single-device JAX reference (no shard_map, no
collectives): global and per-device batch norm, bf16 compute, donation, tracing once, embedding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import LOSSES, get_loss, register
from pclr_jax.model.encoder import EncoderConfig, PCLRModel
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.runtime.layout import to_lane_dense
from pclr_jax.step.optimizers import make_optimizer
from pclr_jax.step.train_state import create_train_state
from pclr_jax.step.train_step import make_embed_fn, make_gradient_fn, make_train_step

TINY = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(32, 32),
)
PAIRS = 16
LOSS_HPARAMS = {"temperature": 0.1}
# Tolerances of the sharded step against the reference: float32 sums in a different order.
RTOL, ATOL = 1e-5, 1e-6
# Parameters: per leaf, the largest difference relative to the largest change the step made
# plus the weights' own float32 rounding (batch-norm backward passes sum many cancelling terms;
# 8-device runs measured <= 7e-6).
UPDATE_RTOL = 1e-4


def _optimizer(total_steps=10):
    # LARS: its update is linear in the gradient, so states compare at float32 rounding.
    cfg = ml_collections.ConfigDict(
        dict(
            name="lars",
            learning_rate=0.5,
            lr_scaling="none",
            base_batch_pairs=256,
            warmup_steps=0,
            schedule="cosine",
            weight_decay=1e-4,
            grad_clip_norm=None,
            b1=0.9,
            b2=0.999,
            eps=1e-7,
        )
    )
    return make_optimizer(cfg, PAIRS, total_steps)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    shape = (PAIRS, TINY.n_samples, TINY.n_leads)
    # The two views share a patient component, as two ECGs of one patient do.
    patient = rng.normal(size=shape)
    return {
        "view_a": (patient + 0.5 * rng.normal(size=shape)).astype(np.float32),
        "view_b": (patient + 0.5 * rng.normal(size=shape)).astype(np.float32),
        "patient_id": np.arange(PAIRS, dtype=np.int32),
    }


def _sharded(batch, mesh):
    return jax.device_put(batch, NamedSharding(mesh, P("data")))


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol),
        actual,
        expected,
    )


def _assert_updates_close(actual, expected, initial):
    def check(path, a, e, i):
        error = np.max(np.abs(a - e))
        change = np.max(np.abs(e - i))
        rounding = 2 * np.spacing(np.max(np.abs(e)))  # float32 rounding of the weights themselves
        assert error <= UPDATE_RTOL * change + rounding, (jax.tree_util.keystr(path), error, change)

    jax.tree_util.tree_map_with_path(check, actual, expected, initial)


@pytest.fixture(scope="module")
def setup():
    """Initial state (on the host), optimizer, batch and the reference step's results."""
    optimizer, schedule = _optimizer()
    state = _host(
        create_train_state(TINY, get_loss("ntxent"), optimizer, jax.random.key(0), make_mesh())
    )
    batch = _batch()
    model = PCLRModel(TINY)  # one device, whole batch: statistics over all 2G ECGs
    loss = get_loss("ntxent", **LOSS_HPARAMS)

    @jax.jit
    def reference(state, batch):
        def objective(params):
            ecgs = jnp.concatenate([batch["view_a"], batch["view_b"]])
            (_, z), updates = model.apply(
                {"params": params["model"], "batch_stats": state.batch_stats},
                ecgs,
                train=True,
                mutable=["batch_stats"],
            )
            value, metrics = loss(z[:PAIRS], z[PAIRS:], batch["patient_id"], params["loss"])
            return value, (metrics, updates["batch_stats"])

        (value, (metrics, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, _ = optimizer.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        return (
            params,
            stats,
            {
                "loss": value,
                "grad_norm": jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))),
                **metrics,
            },
            grads,
        )

    params, stats, metrics, grads = _host(reference(state, batch))
    return dict(
        optimizer=optimizer,
        schedule=schedule,
        state=state,
        batch=batch,
        params=params,
        batch_stats=stats,
        metrics=metrics,
        grads=grads,
    )


def _fresh_state(setup, mesh):
    return jax.device_put(setup["state"], NamedSharding(mesh, P()))


@pytest.mark.device_check
@pytest.mark.parametrize("n_devices", [pytest.param(8, marks=pytest.mark.devices(8)), 1])
def test_step_equals_single_device_reference(setup, n_devices):
    mesh = make_mesh(jax.devices()[:n_devices])
    assert mesh.size == n_devices
    step = make_train_step(TINY, get_loss("ntxent", **LOSS_HPARAMS), setup["optimizer"], mesh)
    state = _fresh_state(setup, mesh)
    old_arrays = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim]

    new_state, metrics = step(state, _sharded(setup["batch"], mesh))

    # The state was donated: the buffers of its parameters, moments, statistics and key were
    # reused for the new state. (A scalar such as the injected learning rate, which the step also
    # returns as a metric, may be left unaliased.)
    assert all(leaf.is_deleted() for leaf in old_arrays)
    new_state, metrics = _host(new_state), _host(metrics)
    _assert_updates_close(new_state.params, setup["params"], setup["state"].params)
    _assert_trees_close(new_state.batch_stats, setup["batch_stats"])
    for name in ("loss", "grad_norm", "contrastive_accuracy"):
        np.testing.assert_allclose(metrics[name], setup["metrics"][name], rtol=RTOL)
    np.testing.assert_allclose(metrics["learning_rate"], setup["schedule"](0), rtol=1e-6)
    assert int(new_state.step) == 1
    # The step moved the parameters by far more than the tolerance.
    moved = jax.tree.map(
        lambda a, b: np.max(np.abs(a - b)), new_state.params, setup["state"].params
    )
    assert max(jax.tree.leaves(moved)) > 1e-3


@pytest.mark.parametrize("n_devices", [8, 1])
def test_gradient_fn_gives_the_reference_gradients_without_updating(setup, n_devices):
    """make_gradient_fn: the gradient the step applies (of the global loss, before clipping),
    equal to the single-device reference's jax.grad; the state is neither donated nor moved."""
    mesh = make_mesh(jax.devices()[:n_devices])
    gradients = make_gradient_fn(TINY, get_loss("ntxent", **LOSS_HPARAMS), mesh)
    state = _fresh_state(setup, mesh)
    metrics, grads = _host(gradients(state, _sharded(setup["batch"], mesh)))

    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    assert jax.tree.structure(grads) == jax.tree.structure(setup["grads"])
    for actual, expected in zip(
        jax.tree.leaves(grads), jax.tree.leaves(setup["grads"]), strict=True
    ):
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)
    for name in ("loss", "contrastive_accuracy"):
        np.testing.assert_allclose(metrics[name], setup["metrics"][name], rtol=RTOL)
    global_norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(global_norm, setup["metrics"]["grad_norm"], rtol=RTOL)


def test_per_device_batch_norm(setup):
    """sync_batch_norm=False: each device normalises with its own statistics."""
    mesh = make_mesh()
    devices = mesh.size
    local = PAIRS // devices
    step = make_train_step(
        TINY, get_loss("ntxent", **LOSS_HPARAMS), setup["optimizer"], mesh, sync_batch_norm=False
    )
    new_state, metrics = _host(step(_fresh_state(setup, mesh), _sharded(setup["batch"], mesh)))

    # Reference: the model on each device's 2 x local ECGs separately, one global loss.
    model, state, batch = PCLRModel(TINY), setup["state"], setup["batch"]
    apply = jax.jit(
        lambda ecgs: model.apply(
            {"params": state.params["model"], "batch_stats": state.batch_stats},
            ecgs,
            train=True,
            mutable=["batch_stats"],
        )
    )
    z_a, z_b, stats = [], [], []
    for d in range(devices):
        rows = slice(d * local, (d + 1) * local)
        (_, z), updates = apply(np.concatenate([batch["view_a"][rows], batch["view_b"][rows]]))
        z_a.append(z[:local])
        z_b.append(z[local:])
        stats.append(updates["batch_stats"])
    expected_stats = jax.tree.map(lambda *s: np.mean(np.stack(s), axis=0), *stats)
    expected_loss, _ = get_loss("ntxent", **LOSS_HPARAMS)(
        jnp.concatenate(z_a), jnp.concatenate(z_b), batch["patient_id"], {}
    )

    _assert_trees_close(new_state.batch_stats, expected_stats)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=RTOL)
    # ... which is not what global batch norm computes.
    assert abs(float(metrics["loss"]) - float(setup["metrics"]["loss"])) > 1e-3
    global_var = setup["batch_stats"]["encoder"]["stem_bn"]["var"]
    per_device_var = new_state.batch_stats["encoder"]["stem_bn"]["var"]
    # Law of total variance: the global variance is the mean per-device variance plus the variance
    # of the per-device means, so per-device statistics are strictly smaller.
    assert np.all(per_device_var < global_var)


_TRACES = []


def _counting_ntxent(z_a, z_b, patient_ids, loss_params, *, axis_name=None, temperature=0.1):
    _TRACES.append(1)  # runs only while tracing
    return LOSSES["ntxent"].fn(
        z_a, z_b, patient_ids, loss_params, axis_name=axis_name, temperature=temperature
    )


@pytest.mark.device_check
def test_bf16_step_keeps_float32_state_and_traces_once(setup):
    if "counting_ntxent_test" not in LOSSES:
        register("counting_ntxent_test", _counting_ntxent)
    mesh = make_mesh(jax.devices()[:2])
    config = TINY.replace(dtype="bfloat16")
    step = make_train_step(
        config, get_loss("counting_ntxent_test", **LOSS_HPARAMS), setup["optimizer"], mesh
    )
    state = _fresh_state(setup, mesh)
    losses = []
    for seed in range(3):
        state, metrics = step(state, _sharded(_batch(seed), mesh))
        losses.append(float(metrics["loss"]))

    assert len(_TRACES) == 1  # three steps, one trace (and so one compilation)
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    assert all(np.isfinite(losses))
    # bf16 compute gives the float32 loss to bf16 precision (8 bits of mantissa).
    np.testing.assert_allclose(losses[0], setup["metrics"]["loss"], rtol=2e-2)
    assert int(state.step) == 3


def _equations(jaxpr):
    """Every equation of ``jaxpr``, nested ones (jit, shard_map bodies) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                yield from _equations(inner)


def test_float16_lane_dense_views_are_cast_inside_the_step_and_train_it_exactly(setup):
    """The feeds send float16 views (as stored), lane-dense (each 256 x 12 ECG as 24 x 128);
    the compiled step takes them as f16 parameters of that shape and converts and reshapes them
    itself, with the same result as float32 (G, samples, leads) views, bit for bit."""
    mesh = make_mesh(jax.devices()[:4])
    step = make_train_step(TINY, get_loss("ntxent", **LOSS_HPARAMS), setup["optimizer"], mesh)
    full = _batch(3)
    half = dict(full, view_a=to_lane_dense(full["view_a"]), view_b=to_lane_dense(full["view_b"]))
    half = {k: v.astype(np.float16) if k != "patient_id" else v for k, v in half.items()}
    full.update(view_a=full["view_a"].astype(np.float16).astype(np.float32))
    full.update(view_b=full["view_b"].astype(np.float16).astype(np.float32))
    assert half["view_a"].shape == (PAIRS, 24, 128)
    half, full = _sharded(half, mesh), _sharded(full, mesh)

    lowered = step.lower(_fresh_state(setup, mesh), half)
    assert lowered.compile().as_text().count(f"f16[{PAIRS // 4},24,128]") >= 2  # per device
    jaxpr = jax.make_jaxpr(step)(_fresh_state(setup, mesh), half).jaxpr
    casts = [
        eqn
        for eqn in _equations(jaxpr)
        if eqn.primitive.name == "convert_element_type" and eqn.invars[0].aval.dtype == np.float16
    ]
    assert len(casts) == 2 and all(c.params["new_dtype"] == np.float32 for c in casts)

    state_half, metrics_half = step(_fresh_state(setup, mesh), half)
    state_full, metrics_full = step(_fresh_state(setup, mesh), full)
    assert _host(metrics_half) == _host(metrics_full)
    jax.tree.map(np.testing.assert_array_equal, _host(state_half), _host(state_full))


def test_embed_fn_pads_and_matches_model(setup):
    mesh = make_mesh()
    variables = {
        "params": setup["state"].params["model"],
        "batch_stats": setup["state"].batch_stats,
    }
    ecgs = setup["batch"]["view_a"][:13]  # not a multiple of 8 devices
    embeddings = make_embed_fn(TINY, mesh)(variables, ecgs)
    expected = PCLRModel(TINY).apply(variables, ecgs, method=PCLRModel.embed)
    assert embeddings.shape == (13, TINY.embed_dim)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
