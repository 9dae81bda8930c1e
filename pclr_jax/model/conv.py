"""Formulations of the encoder's 'SAME' 1-D convolutions and max pools, chosen per backend.

Shapes: activations are ``(batch, n, channels)`` (NWC, as the encoder), kernels ``(k, c_in, c_out)``
(Flax/Keras layout); padding follows TensorFlow's 'SAME' rule: ``out = ceil(n / stride)``,
``pad = max((out - 1) * stride + k - n, 0)``, ``pad // 2`` on the left, the rest on the right.

Implementations (``impl``):

* ``"xla"``: ``lax.conv_general_dilated`` with the stride, ``lax.reduce_window`` for the pool
  (what ``flax.linen.Conv`` / ``nn.max_pool`` do).
* ``"space_to_depth"``: a strided convolution becomes an UNSTRIDED one on a space-to-depth
  reshape. With ``x_p`` the padded input (right-padded to a multiple of the stride ``s``) and the
  kernel zero-padded to ``k' = s * ceil(k / s)`` taps,
  ``y[o] = sum_j x_p[o s + j] w[j] = sum_q X[o + q] . W[q]`` where ``X = x_p`` reshaped to
  ``(n_p / s, s c_in)`` and ``W = w`` reshaped to ``(k' / s, s c_in, c_out)``: a VALID stride-1
  convolution with ``k' / s`` taps (4 for k16/s4). The result is exact (the same products, summed
  in a different order). XLA:CPU runs unstrided convolutions, and above all their gradients,
  faster than strided ones (whose input gradient is an lhs-dilated convolution). The
  non-overlapping pool (window = stride) becomes a reshape and a max over the window axis. Stride-1
  convolutions are left to ``lax``.
* ``"space_to_depth_grad"``: the forward pass as ``"xla"`` (on XLA:CPU the strided forward
  convolution is the faster one) and the gradients as ``"space_to_depth"`` (a ``custom_vjp``
  whose backward pass is the VJP of the space-to-depth form); the pool as ``"space_to_depth"``.

* ``"dft"``: the stride-1 convolutions with many input channels by blocked real DFTs
  (:mod:`pclr_jax.model.dft_conv`: overlap-save, the channel mixing per frequency bin, 3.6-4.8x
  fewer multiply-adds for the encoder's 16-tap layers, transforms included; every step a matrix
  product, so ``grad`` differentiates it);
  the others (the stem, 1x1 and strided convolutions) as ``"space_to_depth_grad"`` (the strided
  lax forward, space-to-depth gradients: the faster forward in inference, measured), the pool by
  reshape.

* ``"onednn"``: every convolution (any stride and kernel) through a oneDNN custom call with its
  own gradients (:mod:`pclr_jax.model.onednn_conv`; CPU only, float32 and bfloat16, needs the
  ``cpu-onednn`` extra and a C++ compiler: the extension is compiled on first use). Raises
  :class:`~pclr_jax.model.onednn_build.OnednnUnavailable` with the reason and the fix where it
  cannot be loaded. The pool is the reshape-and-max of ``"space_to_depth"`` (on XLA:CPU 1.7-3.7x
  faster than ``reduce_window``, ``docs/speed_cpu.md``).

``"auto"`` (:func:`auto_impl`) first asks :data:`CPU_AUTO` whether ``"dft"`` or ``"onednn"``
measured faster for this (CPU class, dtype, training or inference) on the CPU backend, and takes
it if so (``"onednn"`` only where the extension loads, silently falling back otherwise); else
:data:`AUTO_IMPL`, a table per backend (``jax.default_backend()``) of the XLA formulation in
training and in inference: on CPU ``"space_to_depth"`` in training and ``"xla"`` in inference
(measured, ``docs/speed_cpu.md``); on GPU and TPU ``"xla"`` in both until measured there
(``benchmarks/accelerator_check.sh`` times the formulations on the device and prints the entry it
would write, :mod:`pclr_jax.benchmarking.conv_choice`). Every implementation has the same
parameters, so the choice can be changed on a trained or converted model.

Precision: a ``lax.Precision`` name; ``"default"`` asks for none (``precision=None``), i.e.
JAX's default for float32 inputs: the backend's choice (full float32 on CPU, TF32 on recent
NVIDIA GPUs, one bf16 pass on TPU) unless ``jax.default_matmul_precision`` (or
``JAX_DEFAULT_MATMUL_PRECISION``) says otherwise, as the test suite does off the CPU.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pclr_jax.model import dft_conv, onednn_conv
from pclr_jax.model.padding import same_padding

CONV_IMPLS = ("auto", "xla", "space_to_depth", "space_to_depth_grad", "dft", "onednn")

# What "auto" picks per backend (jax.default_backend()): (training, inference).
# cpu: measured on XLA:CPU (docs/speed_cpu.md): in training the gradients dominate and the
#   space-to-depth form is 1.11-1.21x faster on the float32 step; in inference (forward only)
#   the strided lax convolution is the faster one (space-to-depth forward 0.84-0.88x in bf16).
# gpu, tpu: the plain lax convolution until measured on the device: the accelerator check
#   (benchmarks/accelerator_check.sh, stage conv_formulations) prints the entry to write here.
# A backend missing from the table gets AUTO_FALLBACK.
AUTO_IMPL = {
    "cpu": ("space_to_depth", "xla"),
    "gpu": ("xla", "xla"),
    "tpu": ("xla", "xla"),
}
AUTO_FALLBACK = ("xla", "xla")

# Where "auto" departs from AUTO_IMPL on the CPU backend: (cpu_class(), compute dtype) ->
# (in training, in inference), None for AUTO_IMPL's choice; "onednn" only where the extension
# loads (else AUTO_IMPL's, silently). Measured with benchmarks/onednn_gate.py and
# benchmarks/conv_formulations.py (docs/speed_cpu.md):
# * avx512_amx, bfloat16: oneDNN's AMX kernels run every layer's forward and gradients 3.4-11x
#   faster than XLA:CPU's bf16 convolutions (XLA:CPU has no AMX or avx512_bf16 kernels).
# * avx512_amx, float32: oneDNN 1.1-2x per layer (the kernel gradient of the stride-1 k16 layers
#   0.86-0.90x); the whole step measured (benchmarks/results/onednn_steps.json): 1.10x the
#   space-to-depth step in training, 1.19x the lax forward in inference. "dft" is not measured
#   on this class.
# * avx512 without AMX (an Intel Xeon, family 6 model 207), both dtypes: "dft" (blocked-DFT
#   stride-1 convolutions, pclr_jax/model/dft_conv.py): training step 1.23x (fp32) and 1.27x
#   (bf16) the space-to-depth one, embedding 1.15x and 1.28x the lax forward, ahead of oneDNN
#   in all four (benchmarks/results/conv_formulations_dft_avx512.json). oneDNN's fp32 step was
#   about the space-to-depth one, its bf16 kernels slower than its fp32 ones. AMD Zen 4/5 are
#   in this class too and take "dft" unmeasured (docs/speed_cpu.md#blocked-dft-convolutions).
# * avx2 (Zen 2), other: AUTO_IMPL (XLA leads oneDNN there; "dft" not measured).
CPU_AUTO: dict[tuple[str, str], tuple[str | None, str | None]] = {
    ("avx512_amx", "bfloat16"): ("onednn", "onednn"),
    ("avx512_amx", "float32"): ("onednn", "onednn"),
    ("avx512", "float32"): ("dft", "dft"),
    ("avx512", "bfloat16"): ("dft", "dft"),
}

_DIMS = ("NWC", "WIO", "NWC")


@functools.cache
def cpu_class() -> str:
    """The host CPU's vector extensions as :data:`CPU_AUTO` keys them: ``"avx512_amx"``
    (AVX-512 with AMX bf16 tiles, Intel Sapphire Rapids and later), ``"avx512"``, ``"avx2"`` or
    ``"other"`` (also where ``/proc/cpuinfo`` cannot be read, i.e. off Linux)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return "other"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "avx512_amx" if {"amx_bf16", "amx_tile"} <= flags else "avx512"
    return "avx2" if "avx2" in flags else "other"


def auto_impl(train: bool = True, backend: str | None = None, dtype: Any = "float32") -> str:
    """What ``"auto"`` is for ``backend`` (default ``jax.default_backend()``), compute ``dtype``,
    in training (``train``) or inference: :data:`CPU_AUTO`'s choice for this CPU class on the CPU
    backend (``"onednn"`` only where the extension loads), else :data:`AUTO_IMPL`'s."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        choice = CPU_AUTO.get((cpu_class(), jnp.dtype(dtype).name), (None, None))[0 if train else 1]
        if choice == "dft" or (choice == "onednn" and onednn_conv.usable()):
            return choice
    return AUTO_IMPL.get(backend, AUTO_FALLBACK)[0 if train else 1]


def resolve_impl(
    impl: str, train: bool = True, backend: str | None = None, dtype: Any = "float32"
) -> str:
    """``impl`` with ``"auto"`` replaced by :func:`auto_impl`'s choice for ``backend`` (default:
    ``jax.default_backend()``), compute ``dtype``, in training (``train``) or inference.
    ``"onednn"`` is checked here: it raises ``OnednnUnavailable`` (why, and the fix) where the
    extension cannot be loaded, and ``ValueError`` off the CPU backend."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        return auto_impl(train, backend, dtype)
    if impl == "onednn":
        backend = backend or jax.default_backend()
        if backend != "cpu":
            raise ValueError(f"conv_impl='onednn' runs on the CPU backend only, not {backend!r}")
        onednn_conv.load()
    return impl


def _lax_precision(precision: str) -> str | None:
    """A precision name for ``lax``: ``"default"`` asks for none (module docstring)."""
    return None if precision == "default" else precision


def conv1d_xla(
    x: jax.Array, kernel: jax.Array, stride: int = 1, precision: str = "default"
) -> jax.Array:
    """The reference: 'SAME' ``lax.conv_general_dilated``, ``(b, n, c) -> (b, ceil(n/s), f)``.

    ``precision``: a ``lax.Precision`` name (``'default'``, ``'high'``, ``'highest'``; module
    docstring).
    """
    pad = same_padding(x.shape[1], kernel.shape[0], stride)
    return lax.conv_general_dilated(
        x, kernel, (stride,), [pad], dimension_numbers=_DIMS, precision=_lax_precision(precision)
    )


def conv1d_space_to_depth(
    x: jax.Array, kernel: jax.Array, stride: int = 1, precision: str = "default"
) -> jax.Array:
    """'SAME' strided convolution as an unstrided VALID one on a space-to-depth reshape.

    Same values as :func:`conv1d_xla` up to float rounding; stride 1 (and 1x1 kernels, whose
    strided form is a subsampled matmul) go to ``lax`` unchanged.
    """
    k, c_in, c_out = kernel.shape
    if stride == 1 or k == 1:
        return conv1d_xla(x, kernel, stride, precision)
    batch, n, _ = x.shape
    out = -(-n // stride)
    taps = -(-k // stride)  # kernel taps after the reshape
    left, _ = same_padding(n, k, stride)
    # Output o reads padded samples o*s .. o*s + k - 1, so (out - 1 + taps) * s samples cover all.
    length = (out - 1 + taps) * stride
    x = jnp.pad(x, [(0, 0), (left, length - n - left), (0, 0)])
    x = x.reshape(batch, length // stride, stride * c_in)
    kernel = jnp.pad(kernel, [(0, taps * stride - k), (0, 0), (0, 0)])
    kernel = kernel.reshape(taps, stride * c_in, c_out)
    return lax.conv_general_dilated(
        x, kernel, (1,), "VALID", dimension_numbers=_DIMS, precision=_lax_precision(precision)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv1d_space_to_depth_grad(
    x: jax.Array, kernel: jax.Array, stride: int = 1, precision: str = "default"
) -> jax.Array:
    """:func:`conv1d_xla` forward; gradients by the VJP of :func:`conv1d_space_to_depth`."""
    return conv1d_xla(x, kernel, stride, precision)


def _s2d_grad_fwd(x, kernel, stride, precision):
    return conv1d_xla(x, kernel, stride, precision), (x, kernel)


def _s2d_grad_bwd(stride, precision, residuals, dy):
    _, vjp = jax.vjp(lambda x, k: conv1d_space_to_depth(x, k, stride, precision), *residuals)
    return vjp(dy)


conv1d_space_to_depth_grad.defvjp(_s2d_grad_fwd, _s2d_grad_bwd)


def conv1d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    impl: str = "xla",
    precision: str = "default",
) -> jax.Array:
    """'SAME' 1-D convolution ``(b, n, c_in) x (k, c_in, c_out) -> (b, ceil(n / s), c_out)``."""
    impl = resolve_impl(impl, dtype=x.dtype)
    if impl == "onednn":
        return onednn_conv.conv1d_onednn(x, kernel, stride, precision)
    if impl == "dft":
        if dft_conv.applies(x.shape[1], x.shape[2], kernel.shape[0], stride):
            return dft_conv.conv1d_dft(x, kernel, _lax_precision(precision))
        impl = "space_to_depth_grad"
    if impl == "space_to_depth":
        return conv1d_space_to_depth(x, kernel, stride, precision)
    if impl == "space_to_depth_grad" and stride > 1 and kernel.shape[0] > 1:
        return conv1d_space_to_depth_grad(x, kernel, stride, precision)
    return conv1d_xla(x, kernel, stride, precision)


def max_pool1d(x: jax.Array, pool: int, impl: str = "xla") -> jax.Array:
    """'SAME' max pool with window = stride = ``pool``: ``(b, n, c) -> (b, ceil(n / pool), c)``.

    Padding never wins a window (TensorFlow's rule). ``"space_to_depth"`` (and
    ``"space_to_depth_grad"``, ``"dft"`` and ``"onednn"``) pads with ``-inf``,
    reshapes to ``(b, n / pool, pool, c)`` and takes the max over the window axis. Its gradient
    splits ties evenly where ``lax``'s goes to one element; the encoder only pools values that
    are either pre-activation sums (no ties) or ReLU outputs, whose tied zeros get no gradient.
    """
    if resolve_impl(impl, dtype=x.dtype) == "xla":
        return nn.max_pool(x, (pool,), strides=(pool,), padding="SAME")
    batch, n, c = x.shape
    left, right = same_padding(n, pool, pool)
    if left or right:
        x = jnp.pad(x, [(0, 0), (left, right), (0, 0)], constant_values=-jnp.inf)
    return jnp.max(x.reshape(batch, (n + left + right) // pool, pool, c), axis=2)


class Conv1D(nn.Module):
    """A bias-free 'SAME' ``nn.Conv`` replacement with a selectable formulation.

    Parameter ``kernel`` ``(kernel_size, c_in, features)``, initialised as ``nn.Conv`` does
    (LeCun normal), so variables are interchangeable with ``nn.Conv(..., use_bias=False)``.
    ``dtype`` is the compute dtype (inputs and kernel are cast to it); parameters are float32.
    ``precision`` is a ``lax.Precision`` name (``EncoderConfig.precision``).
    """

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32
    impl: str = "auto"
    precision: str = "default"
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (self.kernel_size, x.shape[-1], self.features), jnp.float32
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return conv1d(x, kernel, self.stride, self.impl, self.precision)
