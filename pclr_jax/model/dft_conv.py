"""'SAME' stride-1 1-D convolutions by blocked real DFTs: the encoder's ``conv_impl="dft"``.

A convolution with a ``k``-tap kernel costs ``k`` multiply-adds per output sample and channel
pair. Cut into blocks of ``m`` outputs (overlap-save), each block reads ``l = m + k - 1`` input
samples, and the block's circular cross-correlation of length ``l`` is its linear one on those
``m`` outputs. In the real DFT basis of length ``l`` (``f = l // 2 + 1`` complex bins) the
correlation is a product per bin, so the channel mixing becomes ``f`` complex matrix products
per block instead of ``k`` real ones per sample: ``4 f / m`` real multiply-adds per output sample
and channel pair (2.7 for ``k = 16``, ``l = 64``) against ``k`` = 16. The transforms in and out
are matrix products with the DFT matrices (``l x 2f`` and ``2f x m``), per channel: 39 % of the
multiply-adds for the encoder's 64 -> 128 layer, 20 % for its 196 -> 256 one; all included, its
16-tap layers take 3.6-4.8x fewer multiply-adds than the direct convolution.

Every step is a matrix product or a reshape, so ``jax.grad`` differentiates it as it is (the
input and kernel gradients are the same algorithm transposed), in float32. Values equal
:func:`pclr_jax.model.conv.conv1d_xla`'s up to float rounding (relative error about 1e-6 of the
output's scale, from the DFT matrices' float32 entries). bfloat16 inputs are computed in
float32 and the result is cast back (XLA:CPU's bfloat16 products are no faster than its float32
ones).

Measured on XLA:CPU (2-core Intel Xeon with AVX-512, no AMX, lscpu family 6 model 207; batch 64;
``benchmarks/results/conv_formulations_dft_avx512.json``, ``docs/speed_cpu.md#blocked-dft-
convolutions``): the encoder's stride-1 k16 layers with 64 or more channels in run forward and
both gradients 1.13-1.73x faster than ``lax``'s convolution (the forward alone 0.93-1.53x: the
4,096-sample layer's forward is the slowest); the whole training step 1.23x (float32) and 1.27x
(bfloat16) the space-to-depth one. The stem (12 channels in) and short kernels gain nothing, so
:func:`applies` leaves them to ``lax``.

Shapes as in :mod:`pclr_jax.model.conv`: activations ``(batch, n, c_in)``, kernels
``(k, c_in, c_out)``, outputs ``(batch, n, c_out)``; TensorFlow's 'SAME' padding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pclr_jax.model.padding import same_padding

# Below these the DFT does not pay: with 4 taps the mixing saves 1.4x (4 f / m against k) before
# the transforms; with 12 channels in (the stem) the transforms dominate, its forward measured 2x
# slower than lax's while the block length was chosen.
MIN_TAPS = 8
MIN_CHANNELS_IN = 32


def applies(n: int, c_in: int, k: int, stride: int) -> bool:
    """Whether a 'SAME' convolution of ``n`` samples, ``c_in`` input channels, ``k`` taps and
    ``stride`` goes through the blocked DFT (stride 1, ``k >= MIN_TAPS``,
    ``c_in >= MIN_CHANNELS_IN``); the others are better left to ``lax``."""
    return stride == 1 and k >= MIN_TAPS and c_in >= MIN_CHANNELS_IN and n > 1


def block_length(n: int, k: int) -> int:
    """The DFT length ``l`` for ``n`` output samples and ``k`` taps: the power of two nearest
    ``4 k`` (64 for ``k = 16``), or ``2 k`` rounded up to one when ``n`` is at most ``4 k``
    (fewer wasted outputs in the last block). Always ``l >= 2 k - 1``, so a block's ``m = l - k
    + 1`` outputs cover the ``k - 1`` samples it shares with the next."""
    target = 2 * k if n <= 4 * k else 4 * k
    return 1 << max(int(np.ceil(np.log2(target))), 1)


@functools.cache
def dft_matrices(length: int) -> tuple[np.ndarray, np.ndarray]:
    """The real DFT of ``length`` samples as matrices (float32): ``forward`` ``(length, 2 f)``
    maps a signal to its bins' real parts then imaginary parts (``f = length // 2 + 1``);
    ``inverse`` ``(2 f, length)`` maps them back (``signal == signal @ forward @ inverse`` up to
    rounding)."""
    bins = length // 2 + 1
    angle = 2 * np.pi * np.outer(np.arange(length), np.arange(bins)) / length
    forward = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    # A real signal's bins 1 .. f-2 (and f-1 for odd lengths) stand for two conjugate bins.
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    inverse = np.concatenate([weight * np.cos(angle), -weight * np.sin(angle)], axis=1).T / length
    return forward.astype(np.float32), inverse.astype(np.float32)


def conv1d_dft(x: jax.Array, kernel: jax.Array, precision: str | None = None) -> jax.Array:
    """'SAME' stride-1 convolution ``(b, n, c_in) x (k, c_in, c_out) -> (b, n, c_out)`` by
    blocked real DFTs (module docstring), in float32 whatever the inputs' dtype; the result in
    ``x``'s dtype. ``precision``: a ``lax.Precision`` name or ``None`` for the matrix products
    (on CPU float32 products are full float32 either way)."""
    if x.ndim != 3 or kernel.ndim != 3 or x.shape[2] != kernel.shape[1]:
        raise ValueError(f"expected (b, n, c) and (k, c, f), got {x.shape} and {kernel.shape}")
    dtype = x.dtype
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    batch, n, c_in = x.shape
    k, _, c_out = kernel.shape
    length = block_length(n, k)
    outputs = length - k + 1  # per block
    bins = length // 2 + 1
    blocks = -(-n // outputs)
    forward, inverse = dft_matrices(length)
    left, _ = same_padding(n, k, 1)

    # Blocks of `length` samples starting every `outputs` samples: block j is chunk j of the
    # padded input followed by the first k - 1 samples of chunk j + 1.
    x = jnp.pad(x, [(0, 0), (left, (blocks + 1) * outputs - n - left), (0, 0)])
    chunks = x.reshape(batch, blocks + 1, outputs, c_in)
    frames = jnp.concatenate([chunks[:, :blocks], chunks[:, 1:, : k - 1]], axis=2)
    spectra = jnp.einsum("bjlc,lq->qbjc", frames, forward, precision=precision)
    spectra = spectra.reshape(2, bins, batch * blocks, c_in)
    spectra = jnp.concatenate([spectra[0], spectra[1]], axis=-1)  # (bins, rows, 2 c_in)

    # Correlation multiplies by the kernel's conjugate spectrum: with W = Wr + i Wi,
    # (Xr + i Xi)(Wr - i Wi) = [Xr, Xi] @ [[Wr, -Wi], [Wi, Wr]] as (real, imaginary) columns.
    padded = jnp.pad(kernel, [(0, length - k), (0, 0), (0, 0)])
    kernel_spectra = jnp.einsum("lcd,lq->qcd", padded, forward, precision=precision)
    real, imag = kernel_spectra[:bins], kernel_spectra[bins:]
    mixing = jnp.concatenate(
        [jnp.concatenate([real, -imag], axis=-1), jnp.concatenate([imag, real], axis=-1)], axis=1
    )  # (bins, 2 c_in, 2 c_out)
    mixed = jnp.einsum("frc,fcd->frd", spectra, mixing, precision=precision)
    mixed = jnp.stack([mixed[..., :c_out], mixed[..., c_out:]]).reshape(2 * bins, -1, c_out)
    y = jnp.einsum("qrd,qt->rtd", mixed, inverse[:, :outputs], precision=precision)
    return y.reshape(batch, blocks * outputs, c_out)[:, :n].astype(dtype)
