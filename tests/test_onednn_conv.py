"""The oneDNN convolution prototype (pclr_jax/model/onednn_conv.py, issue 23) against the reference
``lax.conv_general_dilated`` with 'SAME' padding: values, input and kernel gradients, float32 and
bfloat16, under ``jit`` and under ``shard_map`` on 8 devices.

Skipped, with the reason, where the custom call's library is not built or oneDNN cannot be
loaded (``pip install '.[cpu-onednn]' && bash csrc/onednn_conv/build.sh``)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from pclr_jax.model import onednn_conv
from pclr_jax.runtime.distributed import make_mesh

AVAILABLE, WHY = onednn_conv.available()
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


@pytest.mark.parametrize("layout", sorted(onednn_conv.LAYOUTS))
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
