"""``conv_impl="onednn"`` (pclr_jax/model/onednn_conv.py) against the reference
``lax.conv_general_dilated`` with 'SAME' padding: values, input and kernel gradients, float32 and
bfloat16, every memory layout, under ``jit`` and under ``shard_map`` on 8 devices; then the whole
encoder and the training step (1 and 8 devices) against ``conv_impl="xla"``.

Skipped, with the reason, where the extension cannot be loaded (``pip install -e
'.[cpu-onednn]'``; it is compiled on first use, ``python -m pclr_jax.model.onednn_build``).
``tests/test_onednn_build.py`` and ``tests/test_conv_impl.py`` cover the fallback without it."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_train_step import _batch, _optimizer

from pclr_jax.losses import get_loss
from pclr_jax.model import conv, onednn_conv
from pclr_jax.model.encoder import EncoderConfig, PCLRModel, init_variables
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.step.train_state import create_train_state
from pclr_jax.step.train_step import make_embed_fn, make_gradient_fn, make_train_step

AVAILABLE, WHY = onednn_conv.available()
if os.environ.get("PCLR_REQUIRE_ONEDNN") and not AVAILABLE:  # bash run.sh test-onednn
    raise RuntimeError(f"PCLR_REQUIRE_ONEDNN is set and {WHY}")
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"oneDNN custom call unavailable: {WHY}")


def _reference(x, kernel, stride):
    """lax 'SAME' (TensorFlow's rule), full float32, in float32 whatever the inputs' dtype."""
    return lax.conv_general_dilated(
        x.astype(jnp.float32),
        kernel.astype(jnp.float32),
        (stride,),
        "SAME",
        dimension_numbers=("NWC", "WIO", "NWC"),
        precision=lax.Precision.HIGHEST,
    )


def _close(actual, expected, rtol):
    """Max abs difference within ``rtol`` of the reference's largest magnitude."""
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


def _operands(length, kernel, stride, dtype, batch=2, c_in=6, c_out=5):
    """x, kernel and an output cotangent g, rounded to ``dtype`` (the reference sees the same
    values in float32)."""
    rng = np.random.default_rng(length * 31 + kernel * 7 + stride)
    x = jnp.asarray(rng.normal(size=(batch, length, c_in)), dtype)
    w = jnp.asarray(rng.normal(size=(kernel, c_in, c_out)) / np.sqrt(kernel * c_in), dtype)
    g = jnp.asarray(rng.normal(size=(batch, -(-length // stride), c_out)), dtype)
    return x, w, g


def _grads(conv, x, w, g):
    """Input and kernel gradients of ``sum(conv(x, w) * g)`` through ``jax.vjp``, jitted."""

    def vjp(x, w, g):
        out, pullback = jax.vjp(conv, x, w)
        return pullback(g.astype(out.dtype))

    return jax.jit(vjp)(x, w, g)


TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
SHAPES = [
    (4096, 16, 4),
    (4096, 16, 1),
    (313, 16, 4),
    (37, 16, 1),
    (79, 16, 4),
    (9, 16, 4),  # fewer samples than taps
    (1024, 1, 1),
    (313, 1, 4),
    (20, 1, 1),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("length,kernel,stride", SHAPES)
def test_matches_lax_values_and_gradients(length, kernel, stride, dtype):
    x, w, g = _operands(length, kernel, stride, jnp.dtype(dtype))
    conv = functools.partial(onednn_conv.conv1d_onednn, stride=stride)
    actual = jax.jit(conv)(x, w)
    assert actual.shape == (2, -(-length // stride), 5) and actual.dtype == x.dtype
    _close(actual, jax.jit(_reference, static_argnums=2)(x, w, stride), TOLERANCE[dtype])
    got = _grads(conv, x, w, g)
    want = _grads(lambda x, w: _reference(x, w, stride), x, w, g)
    for a, e, operand in zip(got, want, (x, w), strict=True):
        assert a.dtype == operand.dtype
        _close(a, e, TOLERANCE[dtype])


@pytest.mark.parametrize("layout", ["auto", *sorted(onednn_conv.LAYOUTS)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("length,kernel,stride", [(67, 16, 4), (67, 16, 1), (67, 1, 1)])
def test_every_layout_matches_lax(length, kernel, stride, dtype, layout):
    """Each memory-format choice (with its reorders) gives the same convolution."""
    x, w, g = _operands(length, kernel, stride, jnp.dtype(dtype), c_in=20, c_out=18)
    conv = functools.partial(onednn_conv.conv1d_onednn, stride=stride, layout=layout)
    _close(jax.jit(conv)(x, w), _reference(x, w, stride), TOLERANCE[dtype])
    got = _grads(conv, x, w, g)
    want = _grads(lambda x, w: _reference(x, w, stride), x, w, g)
    for a, e in zip(got, want, strict=True):
        _close(a, e, TOLERANCE[dtype])


def test_rejects_mixed_or_unsupported_dtypes():
    x, w, _ = _operands(16, 16, 1, jnp.float32)
    with pytest.raises(TypeError):
        onednn_conv.conv1d_onednn(x, w.astype(jnp.bfloat16))
    with pytest.raises(TypeError):
        onednn_conv.conv1d_onednn(x.astype(jnp.float16), w.astype(jnp.float16))


def test_describe_names_an_implementation():
    impl, reorders = onednn_conv.describe("fwd", jnp.float32, 256, 16, 32, 16, 4, 2, "plain")
    assert impl and not reorders


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv1d_dispatches_onednn_explicitly(dtype):
    """``conv.conv1d(impl="onednn")`` is the custom call (no ``lax`` convolution in the program)
    and resolving "onednn" on this CPU returns it."""
    x, w, _ = _operands(64, 16, 4, jnp.dtype(dtype))
    jaxpr = jax.make_jaxpr(lambda x, w: conv.conv1d(x, w, 4, "onednn"))(x, w)
    names = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert "conv_general_dilated" not in names
    assert conv.resolve_impl("onednn", dtype=dtype) == "onednn"
    _close(conv.conv1d(x, w, 4, "onednn"), _reference(x, w, 4), TOLERANCE[dtype])


@pytest.mark.devices(8)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_under_shard_map_on_8_devices(dtype):
    """Batch split over 8 devices, kernel replicated, as in the training step: the gradient of
    the ``psum`` of the local losses is the global one (the kernel's summed over the devices by
    the custom VJP), the input gradient per shard; equal to the unsharded reference."""
    mesh = make_mesh(jax.devices()[:8])
    x, w, g = _operands(129, 16, 4, jnp.dtype(dtype), batch=16)

    def local(x, w, g):
        def loss(x, w):
            out = onednn_conv.conv1d_onednn(x, w, 4)
            return lax.psum(jnp.sum(out.astype(jnp.float32) * g.astype(jnp.float32)), "data")

        return jax.value_and_grad(loss, (0, 1))(x, w)

    sharded = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("data"), P(), P("data")),
            out_specs=(P(), (P("data"), P())),
        )
    )
    value, (dx, dw) = sharded(x, w, g)

    def reference_loss(x, w):
        return jnp.sum(_reference(x, w, 4) * g.astype(jnp.float32))

    want_value, (want_dx, want_dw) = jax.value_and_grad(reference_loss, (0, 1))(
        x.astype(jnp.float32), w.astype(jnp.float32)
    )
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(float(value), float(want_value), rtol=tol, atol=tol)
    _close(dx, want_dx, tol)
    _close(dw, want_dw, tol)


# The encoder and the step: strides 4 (the released model's), kernels 16 and 1 (skip convs where
# the width changes), batch norm on, a head; small enough for seconds.
SMALL = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 4, 1),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=16,
    head_sizes=(32, 32),
)


def _worst(actual, expected) -> float:
    """The largest over leaves of (largest difference / largest magnitude of the leaf)."""
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if e.size:
            worst = max(worst, float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-30)))
    return worst


def _agree(results: dict, dtype: str, tolerance: dict) -> None:
    """``results[(dtype, impl)]``: dicts of named output groups. float32: oneDNN's equal XLA's
    within ``tolerance[group]`` (sums in another order). bfloat16, where every activation is
    rounded to 8 bits of mantissa and a small batch's batch-norm gradients cancel heavily (XLA's
    own bf16 gradients differ from float32 by tens of percent here): oneDNN's bf16 outputs are as
    close to the float32 reference as XLA's bf16 outputs are (within 2x, plus 1e-2: a scalar such
    as the loss may land within a bf16 rounding, 2^-8 = 4e-3, of float32 by luck)."""
    reference = results[("float32", "xla")]
    for group in reference:
        if dtype == "float32":
            error = _worst(results[("float32", "onednn")][group], reference[group])
            assert error <= tolerance[group], (group, error)
        else:
            ours = _worst(results[("bfloat16", "onednn")][group], reference[group])
            xla = _worst(results[("bfloat16", "xla")][group], reference[group])
            assert ours <= 2 * xla + 1e-2, (group, ours, xla)


def _cases(dtype: str) -> list[tuple[str, str]]:
    """(dtype, conv_impl) to run: the float32 XLA reference, then XLA and oneDNN in ``dtype``."""
    return list(dict.fromkeys([("float32", "xla"), (dtype, "xla"), (dtype, "onednn")]))


def _ecgs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SMALL.n_samples, SMALL.n_leads)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_encoder_matches_xla_in_training_and_inference(dtype):
    """The whole model with every convolution through oneDNN: the same variables, and the
    training-mode projections, batch statistics and parameter gradients and the eval-mode
    embedding equal to ``conv_impl="xla"``'s (:func:`_agree`)."""
    variables = init_variables(SMALL.replace(conv_impl="xla"), jax.random.key(0))
    onednn_variables = init_variables(SMALL.replace(conv_impl="onednn"), jax.random.key(0))
    for a, e in zip(jax.tree.leaves(onednn_variables), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, e)
    x = jnp.asarray(_ecgs(8))
    results = {}
    for case in _cases(dtype):
        model = PCLRModel(SMALL.replace(dtype=case[0], conv_impl=case[1]))

        def loss(params, model=model):
            (_, z), updates = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(jnp.sin(z)), (z, updates["batch_stats"])

        grads, (z, stats) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
        embed = jax.jit(lambda v, model=model: model.apply(v, x, method=PCLRModel.embed))(variables)
        results[case] = {"projection": z, "batch_stats": stats, "grads": grads, "embed": embed}
    _agree(results, dtype, {"projection": 1e-5, "batch_stats": 1e-5, "grads": 1e-4, "embed": 1e-5})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("n_devices", [pytest.param(8, marks=pytest.mark.devices(8)), 1])
def test_training_step_matches_xla(n_devices, dtype):
    """The sharded training step (``shard_map`` over ``'data'``, global batch norm, NT-Xent with
    gathered negatives, LARS) with ``conv_impl="onednn"``: the gradients it applies, its loss,
    the parameters' change (LARS' update is linear in the gradient) and the batch statistics
    equal ``conv_impl="xla"``'s (:func:`_agree`); a second step runs from the first's donated
    state, to the same loss in float32 (it starts from slightly different parameters: looser) and
    to a finite one in bfloat16 (where one step's rounding differences grow by the next)."""
    mesh = make_mesh(jax.devices()[:n_devices])
    replicated = NamedSharding(mesh, P())
    loss = get_loss("ntxent", temperature=0.1)
    optimizer, _ = _optimizer()  # LARS: its update is linear in the gradient
    initial = jax.device_get(
        create_train_state(SMALL.replace(conv_impl="xla"), loss, optimizer, jax.random.key(0), mesh)
    )
    batch = jax.device_put(_batch(), NamedSharding(mesh, P("data")))
    results, second_losses = {}, {}
    for case in _cases(dtype):
        config = SMALL.replace(dtype=case[0], conv_impl=case[1])
        metrics, grads = make_gradient_fn(config, loss, mesh)(
            jax.device_put(initial, replicated), batch
        )
        step = make_train_step(config, loss, optimizer, mesh)
        state, step_metrics = step(jax.device_put(initial, replicated), batch)
        params, stats = jax.device_get((state.params, state.batch_stats))
        _, second = step(state, batch)
        results[case] = {
            "loss": (metrics["loss"], step_metrics["loss"]),
            "grads": grads,
            "change": jax.tree.map(np.subtract, params, initial.params),
            "batch_stats": stats,
        }
        second_losses[case] = float(second["loss"])
    # change: relative to the largest change of a leaf, which the weights' own float32 rounding
    # (about 1e-7 of weights near 1, against changes near 1e-3) reaches 1e-4 of.
    _agree(results, dtype, {"loss": 1e-5, "grads": 1e-4, "change": 1e-3, "batch_stats": 1e-5})
    assert all(np.isfinite(list(second_losses.values())))
    if dtype == "float32":
        got, want = second_losses[("float32", "onednn")], second_losses[("float32", "xla")]
        np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.devices(8)
def test_embedding_on_8_devices_matches_xla():
    """``make_embed_fn`` (a plain ``jit`` over a batch sharded on 8 devices, no ``shard_map``):
    XLA runs the custom call on gathered operands, with the same embeddings."""
    mesh = make_mesh(jax.devices()[:8])
    variables = init_variables(SMALL, jax.random.key(1), with_head=True)
    ecgs = _ecgs(13, seed=2)  # not a multiple of 8: padded
    got = make_embed_fn(SMALL.replace(conv_impl="onednn"), mesh)(variables, ecgs)
    want = make_embed_fn(SMALL.replace(conv_impl="xla"), mesh)(variables, ecgs)
    _close(got, want, 1e-4)
