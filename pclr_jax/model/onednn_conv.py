"""'SAME' 1-D convolutions through oneDNN: the encoder's ``conv_impl="onednn"``.

:func:`conv1d_onednn` is a drop-in for :func:`pclr_jax.model.conv.conv1d_xla` (same arguments,
same values up to float rounding) whose forward pass, input gradient and kernel gradient are
three ``jax.ffi`` custom calls into oneDNN's convolution primitives (``onednn_conv.cc`` beside
this file), tied together by a ``custom_vjp``. It works under ``jit``, ``grad`` and ``shard_map``
(a kernel replicated over a mesh axis that the batch is split over gets its gradient summed over
that axis, as ``lax``'s would); under a plain ``jit`` with sharded inputs XLA runs the custom call
on gathered operands (correct, not split).

Shapes as in :mod:`pclr_jax.model.conv`: activations ``(batch, n, c_in)`` (NWC), kernels
``(k, c_in, c_out)`` (WIO), outputs ``(batch, ceil(n / stride), c_out)``; TensorFlow's 'SAME'
padding (:func:`pclr_jax.model.padding.same_padding`); any stride and kernel size. dtypes float32
or bfloat16 (inputs, kernel and output in one dtype; oneDNN accumulates in float32); anything else
raises ``TypeError``. ``precision`` is accepted for the signature's sake and ignored: oneDNN's
float32 convolutions are full float32 (its default fpmath mode), as XLA:CPU's are. CPU backend
only.

``layout`` chooses the memory formats the oneDNN primitives are created with (:data:`LAYOUTS`):
``"plain_act"`` keeps the activations in NWC and lets oneDNN pick the kernel's layout (a small
reorder per call), ``"any"`` lets it pick every operand's (reorders in and out where they differ),
``"plain"`` forces NWC/WIO everywhere (no reorders), ``"blocked"`` reorders the activations to
oneDNN's channel-blocked ``nCw16c`` and back. ``"auto"`` (the default) takes :data:`AUTO_LAYOUT`'s
choice per dtype and pass, the fastest measured on the encoder's layers
(``benchmarks/onednn_gate.py``, ``docs/speed_cpu.md#the-onednn-path``).

The shared library comes from :mod:`pclr_jax.model.onednn_build` (compiled on first use, cached).
Nothing is loaded when this module is imported: :func:`load` (called on first use) loads it and
registers the custom calls, or raises :class:`OnednnUnavailable` with the reason and the fix;
:func:`usable` and :func:`available` answer without raising (``"auto"`` falls back to XLA on
``usable() == False``).
"""

from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pclr_jax.model import onednn_build
from pclr_jax.model.onednn_build import OnednnUnavailable
from pclr_jax.model.padding import same_padding

__all__ = ["OnednnUnavailable", "available", "conv1d_onednn", "describe", "load", "usable"]

LAYOUTS = {"plain_act": 0, "any": 1, "plain": 2, "blocked": 3}
PASSES = ("fwd", "bwd_data", "bwd_weights")
# layout="auto" per dtype and pass: the fastest, or within 5% of it, on most of the encoder's
# layers (Intel Xeon with AMX, benchmarks/results/onednn_gate.json).
# float32: "any" for the forward pass, "plain_act" for both gradients ("any" makes oneDNN's
# gradients reorder, up to 1.7x slower); bfloat16: "any" everywhere ("plain" is 3-4x slower).
AUTO_LAYOUT = {
    "float32": {"fwd": "any", "bwd_data": "plain_act", "bwd_weights": "plain_act"},
    "bfloat16": {"fwd": "any", "bwd_data": "any", "bwd_weights": "any"},
}
# Custom-call target names, by pass; the C symbols of their handlers.
TARGETS = {
    "fwd": ("pclr_onednn_conv_fwd", "OnednnConvFwd"),
    "bwd_data": ("pclr_onednn_conv_bwd_data", "OnednnConvBwdData"),
    "bwd_weights": ("pclr_onednn_conv_bwd_weights", "OnednnConvBwdWeights"),
}
_DTYPES = {jnp.dtype(jnp.float32): 0, jnp.dtype(jnp.bfloat16): 1}


@functools.cache
def _load() -> ctypes.CDLL | OnednnUnavailable:
    """The loaded library with its custom calls registered, or why it cannot be (the outcome is
    kept either way: a failed compile is not retried in this process)."""
    try:
        path = onednn_build.library()
    except OnednnUnavailable as error:
        return error
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:  # e.g. libdnnl.so.3 gone: the wheel was uninstalled
        return OnednnUnavailable(
            f"{path} does not load ({error}): {onednn_build.INSTALL_HINT}, then "
            f"python -m {onednn_build.__name__} --force"
        )
    for name, symbol in TARGETS.values():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    lib.onednn_conv_version.restype = ctypes.c_char_p
    lib.onednn_conv_describe.restype = ctypes.c_int
    lib.onednn_conv_describe.argtypes = (
        [ctypes.c_int] * 2
        + [ctypes.c_int64] * 8
        + [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
    )
    return lib


def load() -> ctypes.CDLL:
    """The shared library, loaded and its three custom calls registered with XLA (once; compiled
    first if not cached). Raises :class:`OnednnUnavailable` with the reason and the fix."""
    outcome = _load()
    if isinstance(outcome, OnednnUnavailable):
        raise OnednnUnavailable(f"conv_impl='onednn' is unavailable: {outcome}")
    return outcome


def usable() -> bool:
    """Whether the custom call loads (compiling it first if needed); never raises."""
    return not isinstance(_load(), OnednnUnavailable)


def available() -> tuple[bool, str]:
    """``(True, oneDNN's version)`` where the custom call loads, else ``(False, why not)``."""
    try:
        return True, load().onednn_conv_version().decode()
    except OnednnUnavailable as error:
        return False, str(error)


def resolve_layout(layout: str, dtype, what: str) -> str:
    """``layout`` with ``"auto"`` replaced by :data:`AUTO_LAYOUT`'s choice for ``dtype``/pass."""
    if layout == "auto":
        return AUTO_LAYOUT[jnp.dtype(dtype).name][what]
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(LAYOUTS)}, got {layout!r}")
    return layout


def _check(x: jax.Array, kernel: jax.Array) -> None:
    if x.ndim != 3 or kernel.ndim != 3 or x.shape[2] != kernel.shape[1]:
        raise ValueError(f"expected (b, n, c) and (k, c, f), got {x.shape} and {kernel.shape}")
    if x.dtype != kernel.dtype or jnp.dtype(x.dtype) not in _DTYPES:
        raise TypeError(
            "conv_impl='onednn' takes float32 or bfloat16 operands of one dtype, got "
            f"{x.dtype} and {kernel.dtype}"
        )


def _varying(x) -> frozenset:
    """The mesh axes ``x`` varies over inside ``shard_map`` (empty outside)."""
    return jax.typeof(x).mat.varying


def _call(what: str, shape: tuple, dtype, a, b, stride: int, pad: tuple[int, int], layout: str):
    """One custom call. Inside ``shard_map`` both operands are cast to vary over the union of
    their varying axes (a replicated kernel with a sharded batch), and so does the result."""
    load()
    layout = resolve_layout(layout, dtype, what)
    varying = _varying(a) | _varying(b)
    a, b = (
        lax.pcast(v, tuple(sorted(varying - _varying(v))), to="varying")
        if varying - _varying(v)
        else v
        for v in (a, b)
    )
    result = jax.ShapeDtypeStruct(shape, dtype)
    if varying:  # the mesh comes with the operand's sharding
        mat = jax.sharding.ManualAxisType(varying=varying)
        result = jax.ShapeDtypeStruct(
            shape, dtype, sharding=jax.typeof(a).sharding, manual_axis_type=mat
        )
    call = jax.ffi.ffi_call(TARGETS[what][0], result, vmap_method="sequential")
    return call(
        a,
        b,
        stride=np.int64(stride),
        pad_l=np.int64(pad[0]),
        pad_r=np.int64(pad[1]),
        layout=np.int64(LAYOUTS[layout]),
    )


def forward(x, kernel, stride: int = 1, layout: str = "auto") -> jax.Array:
    """oneDNN's forward convolution: ``(b, n, c) x (k, c, f) -> (b, ceil(n / s), f)``."""
    _check(x, kernel)
    pad = same_padding(x.shape[1], kernel.shape[0], stride)
    out = (x.shape[0], -(-x.shape[1] // stride), kernel.shape[2])
    return _call("fwd", out, x.dtype, x, kernel, stride, pad, layout)


def backward_data(dy, kernel, n: int, stride: int = 1, layout: str = "auto") -> jax.Array:
    """oneDNN's input gradient: ``dy (b, ceil(n / s), f)`` and ``kernel (k, c, f)`` give
    ``(b, n, c)``."""
    pad = same_padding(n, kernel.shape[0], stride)
    shape = (dy.shape[0], n, kernel.shape[1])
    return _call(
        "bwd_data", shape, kernel.dtype, dy.astype(kernel.dtype), kernel, stride, pad, layout
    )


def backward_weights(x, dy, k: int, stride: int = 1, layout: str = "auto") -> jax.Array:
    """oneDNN's kernel gradient: ``x (b, n, c)``, ``dy (b, ceil(n / s), f)`` -> ``(k, c, f)``."""
    pad = same_padding(x.shape[1], k, stride)
    shape = (k, x.shape[2], dy.shape[2])
    return _call("bwd_weights", shape, x.dtype, x, dy.astype(x.dtype), stride, pad, layout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv1d_onednn(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    precision: str = "default",
    layout: str = "auto",
) -> jax.Array:
    """'SAME' 1-D convolution through oneDNN, ``(b, n, c_in) x (k, c_in, c_out) ->
    (b, ceil(n / s), c_out)``, as :func:`pclr_jax.model.conv.conv1d_xla` (``precision`` ignored,
    module docstring). Raises :class:`OnednnUnavailable` where the extension cannot be loaded."""
    return forward(x, kernel, stride, layout)


def _fwd(x, kernel, stride, precision, layout):
    return forward(x, kernel, stride, layout), (x, kernel)


def _bwd(stride, precision, layout, residuals, dy):
    x, kernel = residuals
    dx = backward_data(dy, kernel, x.shape[1], stride, layout)
    dw = backward_weights(x, dy, kernel.shape[0], stride, layout)
    # Under shard_map a gradient must vary as its primal does: an operand replicated over an axis
    # the other varies over gets the sum over that axis (the transpose of the implicit pcast).
    return tuple(
        lax.psum(grad, tuple(sorted(_varying(grad) - _varying(primal))))
        if _varying(grad) - _varying(primal)
        else grad
        for grad, primal in ((dx, x), (dw, kernel))
    )


conv1d_onednn.defvjp(_fwd, _bwd)


def describe(
    what: str, dtype, n: int, c_in: int, c_out: int, k: int, stride: int, batch: int, layout: str
) -> tuple[str, list[str]]:
    """The implementation oneDNN picks for one pass (``fwd``, ``bwd_data``, ``bwd_weights``) of a
    layer, e.g. ``"brgconv:avx512_core_amx"``, and the operands it reorders (``in_a``, ``in_b``:
    the pass's two inputs; ``out_c``: its output)."""
    lib = load()
    layout = resolve_layout(layout, dtype, what)
    pad = same_padding(n, k, stride)
    buf = ctypes.create_string_buffer(512)
    rc = lib.onednn_conv_describe(
        PASSES.index(what),
        _DTYPES[jnp.dtype(dtype)],
        batch,
        n,
        c_in,
        c_out,
        k,
        stride,
        pad[0],
        pad[1],
        LAYOUTS[layout],
        buf,
        len(buf),
    )
    text = buf.value.decode()
    if rc:
        raise RuntimeError(f"oneDNN: {text}")
    impl, reorders = text.split(";")
    return impl, [r for r in reorders.split(",") if r]
