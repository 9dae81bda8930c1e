"""Blocked-DFT convolutions (pclr_jax/model/dft_conv.py) against independent references: numpy's
FFT for the DFT matrices, ``lax.conv_general_dilated`` at full precision for values and both
gradients (the routing of ``conv_impl="dft"``: tests/test_conv_impl.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pclr_jax.model import dft_conv


def _reference(x, kernel):
    return lax.conv_general_dilated(
        x, kernel, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"), precision="highest"
    )


def _close(actual, expected, rtol):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


@pytest.mark.parametrize("length", [8, 15, 32, 64])
def test_dft_matrices_are_numpys_real_fft_and_invert(length):
    forward, inverse = dft_conv.dft_matrices(length)
    bins = length // 2 + 1
    assert forward.shape == (length, 2 * bins) and inverse.shape == (2 * bins, length)
    signal = np.random.default_rng(length).normal(size=(3, length))
    spectrum = np.fft.rfft(signal, axis=-1)
    got = signal @ forward
    np.testing.assert_allclose(got[:, :bins], spectrum.real, atol=1e-5)
    np.testing.assert_allclose(got[:, bins:], spectrum.imag, atol=1e-5)
    np.testing.assert_allclose(got @ inverse, signal, atol=1e-5)


@pytest.mark.parametrize(
    "n,k,expected",
    [(4096, 16, 64), (1024, 16, 64), (65, 16, 64), (64, 16, 32), (16, 16, 32), (300, 9, 64)],
)
def test_block_length(n, k, expected):
    length = dft_conv.block_length(n, k)
    assert length == expected
    assert length - k + 1 >= k - 1  # a block's outputs cover what it shares with the next


@pytest.mark.parametrize(
    "n,c_in,c_out,k",
    [
        (300, 32, 24, 16),  # several blocks, the last one partial
        (49, 40, 8, 16),  # exactly one block's outputs
        (20, 33, 5, 16),  # shorter than the kernel
        (129, 32, 16, 9),  # odd kernel: 'SAME' pads 4 left, 4 right
        (97, 32, 7, 8),  # even kernel: 3 left, 4 right
        (2, 32, 3, 8),
    ],
)
def test_values_and_gradients_match_lax(n, c_in, c_out, k):
    rng = np.random.default_rng(n + 7 * k)
    x = jnp.asarray(rng.normal(size=(3, n, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, c_in, c_out)) / np.sqrt(k * c_in), jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, n, c_out)), jnp.float32)
    _close(jax.jit(dft_conv.conv1d_dft)(x, kernel), _reference(x, kernel), 1e-5)

    def loss(f):
        return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * g), (0, 1)))

    got, want = loss(dft_conv.conv1d_dft)(x, kernel), loss(_reference)(x, kernel)
    for a, e in zip(got, want, strict=True):
        _close(a, e, 1e-5)


def test_bfloat16_is_computed_in_float32_and_returned_in_bfloat16():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 200, 32)), jnp.bfloat16)
    kernel = jnp.asarray(rng.normal(size=(16, 32, 16)) / 20, jnp.bfloat16)
    got = dft_conv.conv1d_dft(x, kernel)
    assert got.dtype == jnp.bfloat16
    want = _reference(x.astype(jnp.float32), kernel.astype(jnp.float32))
    _close(got, want, 2**-8)  # one bfloat16 rounding of the float32 result
