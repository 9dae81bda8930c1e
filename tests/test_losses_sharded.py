"""Global negatives: every loss under ``jax.shard_map`` on 8 faked CPU devices equals one device.

Tolerance: float32 throughout; losses, metrics and every gradient entry agree with the
single-device computation on the concatenated batch to ``rtol=1e-5``, plus an absolute ``1e-6``
times the largest entry of the same array (entries that are sums of cancelling terms).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.losses import LOSSES, get_loss

N_DEVICES = 8
pytestmark = pytest.mark.devices(N_DEVICES)
LOCAL_PAIRS = 3
GLOBAL_PAIRS = N_DEVICES * LOCAL_PAIRS
DIM = 8
RTOL, ATOL_FRACTION = 1e-5, 1e-6


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() >= N_DEVICES, "tests/conftest.py fakes 8 CPU devices"
    return Mesh(np.array(jax.devices()[:N_DEVICES]), ("data",))


def _batch(mesh, seed=0):
    rng = np.random.default_rng(seed)
    z_a = rng.normal(size=(GLOBAL_PAIRS, DIM)).astype(np.float32)
    z_b = (z_a + rng.normal(size=(GLOBAL_PAIRS, DIM))).astype(np.float32)
    # repeated patients, also across devices, so positives cross the shard boundaries
    ids = rng.integers(0, GLOBAL_PAIRS // 2, GLOBAL_PAIRS).astype(np.int32)
    sharded = NamedSharding(mesh, P("data"))
    put = lambda x: jax.device_put(x, sharded)
    return (z_a, z_b, ids), (put(z_a), put(z_b), put(ids))


def _replicate(tree, mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _assert_trees_close(actual, expected):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        e = np.asarray(e)
        atol = ATOL_FRACTION * float(np.max(np.abs(e)))
        np.testing.assert_allclose(np.asarray(a), e, rtol=RTOL, atol=atol)


CASES = [(name, None) for name in sorted(LOSSES)] + [
    (name, 5) for name in sorted(LOSSES) if "chunk_size" in LOSSES[name].defaults
]


@pytest.mark.parametrize(
    ("name", "chunk_size"),
    [
        pytest.param(*case, marks=pytest.mark.device_check) if case[0] == "ntxent" else case
        for case in CASES
    ],
)
def test_sharded_loss_and_gradients_equal_single_device(mesh, name, chunk_size):
    """pmean of the per-device losses is the global loss; its gradient w.r.t. the sharded
    projections and the replicated loss parameters is the single-device gradient. Chunks of 5
    columns do not divide the 48 gathered columns."""
    hparams = {} if chunk_size is None else {"chunk_size": chunk_size}
    (z_a, z_b, ids), (sz_a, sz_b, s_ids) = _batch(mesh)
    single = get_loss(name, **hparams)
    sharded = get_loss(name, axis_name="data", **hparams)
    params = single.init_params()

    def global_loss(a, b, i, p):
        loss, metrics = sharded(a, b, i, p)
        return jax.lax.pmean((loss, metrics), "data")

    sharded_fn = jax.shard_map(
        global_loss,
        mesh=mesh,
        in_specs=(P("data"), P("data"), P("data"), P()),
        out_specs=P(),
    )
    grad_argnums = (0, 1, 3)
    value_and_grad = lambda f: jax.jit(
        jax.value_and_grad(lambda a, b, i, p: f(a, b, i, p), grad_argnums, has_aux=True)
    )
    (loss_1, metrics_1), grads_1 = value_and_grad(single)(z_a, z_b, ids, params)
    (loss_8, metrics_8), grads_8 = value_and_grad(sharded_fn)(
        sz_a, sz_b, s_ids, _replicate(params, mesh)
    )
    np.testing.assert_allclose(loss_8, loss_1, rtol=RTOL)
    assert metrics_8.keys() == metrics_1.keys()
    _assert_trees_close(metrics_8, metrics_1)
    _assert_trees_close(grads_8, grads_1)
    assert grads_8[0].sharding.spec == P("data")  # gradients stay with the device owning the rows
    if name == "siglip":
        assert all(abs(float(g)) > 0 for g in jax.tree.leaves(grads_8[2]))


@pytest.mark.parametrize(
    ("name", "chunk_size"),
    [("ntxent", None), ("patient_supcon", 5), ("siglip", 5), ("vicreg", None)],
)
def test_train_step_gradient_patterns(mesh, name, chunk_size):
    """How a training step takes gradients of a replicated model (here one linear map W).

    With ``check_vma=True`` (shard_map's default): differentiate ``pmean(loss)``; gradients of
    replicated parameters come out already reduced. With ``check_vma=False`` (pmap semantics):
    differentiate the local loss and ``pmean`` the gradients, as SimCLR's TPU code does.
    Both equal the single-device gradient.
    """
    rng = np.random.default_rng(1)
    x_a = rng.normal(size=(GLOBAL_PAIRS, 6)).astype(np.float32)
    x_b = (x_a + 0.5 * rng.normal(size=x_a.shape)).astype(np.float32)
    ids = rng.integers(0, GLOBAL_PAIRS // 2, GLOBAL_PAIRS).astype(np.int32)
    w = rng.normal(size=(6, DIM)).astype(np.float32)
    hparams = {} if chunk_size is None else {"chunk_size": chunk_size}
    single = get_loss(name, **hparams)
    sharded = get_loss(name, axis_name="data", **hparams)
    params = {"w": w, "loss": single.init_params()}

    def local_loss(p, xa, xb, i, loss_fn):
        return loss_fn(xa @ p["w"], xb @ p["w"], i, p["loss"])[0]

    expected = jax.jit(jax.grad(local_loss), static_argnums=4)(params, x_a, x_b, ids, single)

    def grad_of_pmean(p, xa, xb, i):
        return jax.grad(lambda q: jax.lax.pmean(local_loss(q, xa, xb, i, sharded), "data"))(p)

    def pmean_of_grad(p, xa, xb, i):
        return jax.lax.pmean(jax.grad(local_loss)(p, xa, xb, i, sharded), "data")

    data = NamedSharding(mesh, P("data"))
    args = (
        _replicate(params, mesh),
        jax.device_put(x_a, data),
        jax.device_put(x_b, data),
        jax.device_put(ids, data),
    )
    for fn, check_vma in ((grad_of_pmean, True), (pmean_of_grad, False)):
        step = jax.shard_map(
            fn,
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data")),
            out_specs=P(),
            check_vma=check_vma,
        )
        _assert_trees_close(jax.jit(step)(*args), expected)


def test_local_losses_differ_but_average_to_the_global_loss(mesh):
    """The returned loss is this device's share, not a replicated copy (ntxent)."""
    (z_a, z_b, ids), (sz_a, sz_b, s_ids) = _batch(mesh, seed=4)
    sharded = get_loss("ntxent", axis_name="data")
    per_device = jax.jit(
        jax.shard_map(
            lambda a, b, i: sharded(a, b, i, {})[0][None],
            mesh=mesh,
            in_specs=(P("data"),) * 3,
            out_specs=P("data"),
        )
    )(sz_a, sz_b, s_ids)
    assert per_device.shape == (N_DEVICES,)
    assert len(np.unique(np.asarray(per_device))) == N_DEVICES
    global_loss, _ = get_loss("ntxent")(jnp.asarray(z_a), jnp.asarray(z_b), ids, {})
    np.testing.assert_allclose(np.mean(per_device), global_loss, rtol=RTOL)


@pytest.mark.parametrize(("name", "chunk_size"), [c for c in CASES if c[0] != "vicreg"])
def test_sharded_accuracy_of_a_collapsed_batch_is_chance(mesh, name, chunk_size):
    """Every projection equal on every device: ml4h's tie rule gives 1/G (the first column
    wins and it is the label of row 0 only), sharded as on one device; never 1.0."""
    hparams = {} if chunk_size is None else {"chunk_size": chunk_size}
    sharded = get_loss(name, axis_name="data", **hparams)
    z = np.ones((GLOBAL_PAIRS, DIM), np.float32)
    ids = np.arange(GLOBAL_PAIRS, dtype=np.int32)
    fn = jax.shard_map(
        lambda a, b, i, p: jax.lax.pmean(sharded(a, b, i, p)[1], "data"),
        mesh=mesh,
        in_specs=(P("data"), P("data"), P("data"), P()),
        out_specs=P(),
    )
    data = NamedSharding(mesh, P("data"))
    metrics = jax.jit(fn)(
        *(jax.device_put(x, data) for x in (z, z, ids)),
        _replicate(sharded.init_params(), mesh),
    )
    assert float(metrics["contrastive_accuracy"]) == pytest.approx(1 / GLOBAL_PAIRS)
