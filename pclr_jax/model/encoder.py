"""The PCLR encoder: the 1-D ResNet of Ribeiro et al. as released by ml4h, in Flax linen.

Shapes: ECGs are ``(batch, samples, leads)`` float arrays in mV; the pooled embedding is
``(batch, unit_filters[-1])`` (320 for the released models); the projection head maps it to
``(batch, head_sizes[-1])``.

The layer graph follows the released Keras models exactly (``shared/keras/*.json``):

* stem: Conv1D(64, k16, 'same', no bias) -> BatchNorm (optional) -> activation;
* four residual units; in each the main path is Conv(k16) -> BN -> act -> [dropout] ->
  Conv(k16, stride=downsample) and the skip path is MaxPool(downsample, 'same') followed by a
  1x1 conv where the width changes; their sum is the next unit's skip input, and BN -> act ->
  [dropout] of the sum is the next unit's main input;
* global average pooling -> ``embed``.

'SAME' padding in ``lax`` follows TensorFlow's rule (out = ceil(n / stride), the odd padding sample
on the right), so a kernel of 16 pads 7 left / 8 right, exactly as Keras does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pclr_jax.model import batch_norm, conv

ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Matmul/convolution precision of the encoder's layers (``lax.Precision`` names). "default" is the
# backend's choice: full float32 on CPUs; TF32 on NVIDIA Ampere and later and one bf16 pass on TPU
# for float32 inputs, which is also what TensorFlow (the original Keras training) does on GPUs;
# it asks lax for no precision, so jax.default_matmul_precision can raise it (model/conv.py).
PRECISIONS = ("default", "high", "highest")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the PCLR encoder and its projection head.

    The defaults describe the released 12-lead model (``PCLR.h5``): 4,096 samples (10 s resampled)
    x 12 leads in the order I, II, III, aVR, aVL, aVF, V1-V6.
    """

    n_leads: int = 12
    n_samples: int = 4096
    stem_filters: int = 64
    unit_samples: tuple[int, ...] = (1024, 256, 64, 16)
    unit_filters: tuple[int, ...] = (128, 196, 256, 320)
    kernel_size: int = 16
    activation: str = "relu"
    dropout: float = 0.0
    stem_batch_norm: bool = True
    head_sizes: tuple[int, ...] = (320, 320)
    dtype: str = "float32"
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    # Formulations (same parameters, same values up to float rounding; "auto" picks per backend,
    # CPU class and dtype; conv_impl="onednn" needs the cpu-onednn extra; see
    # pclr_jax/model/conv.py, pclr_jax/model/batch_norm.py and docs/speed_cpu.md).
    conv_impl: str = "auto"
    norm_impl: str = "auto"
    # Encoder convolutions' precision (PRECISIONS). The projection head and the losses'
    # similarities always run in float32 at "highest".
    precision: str = "default"

    def __post_init__(self):
        if len(self.unit_samples) != len(self.unit_filters):
            raise ValueError("unit_samples and unit_filters must have the same length")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        if any(ds < 1 for ds in self.downsample):
            raise ValueError(f"unit_samples {self.unit_samples} exceed the input length")
        # Membership only: resolving "auto" asks for the backend, which must not be initialised
        # when a config is built (jax.distributed.initialize has to come first).
        if self.conv_impl not in conv.CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {conv.CONV_IMPLS}, got {self.conv_impl!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.norm_impl not in batch_norm.NORM_IMPLS:
            raise ValueError(
                f"norm_impl must be one of {batch_norm.NORM_IMPLS}, got {self.norm_impl!r}"
            )

    @property
    def downsample(self) -> tuple[int, ...]:
        """Stride of each unit: samples_in // samples_out, as ml4h computes it.

        4096 input: (4, 4, 4, 4). 2500 input: (2, 4, 4, 4), since a strided 'same' layer leaves
        ceil(n / stride) samples (2500 -> 1250 -> 313 -> 79 -> 20).
        """
        strides, samples_in = [], self.n_samples
        for samples_out in self.unit_samples:
            stride = samples_in // samples_out
            strides.append(stride)
            samples_in = -(-samples_in // max(stride, 1))
        return tuple(strides)

    @property
    def embed_dim(self) -> int:
        return self.unit_filters[-1]

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        tuples = {"unit_samples", "unit_filters", "head_sizes"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


def _batch_norm(config: EncoderConfig, axis_name: str | None, name: str) -> nn.Module:
    return batch_norm.batch_norm(
        config.norm_impl,
        config.bn_momentum,
        config.bn_epsilon,
        config.compute_dtype,
        axis_name,
        name,
    )


def _conv(
    config: EncoderConfig, filters: int, kernel: int, stride: int, train: bool, name: str
) -> nn.Module:
    """Bias-free 'SAME' conv; kernel ``(kernel, c_in, filters)`` exactly as ``nn.Conv``'s."""
    impl = conv.resolve_impl(config.conv_impl, train, dtype=config.dtype)
    return conv.Conv1D(
        filters,
        kernel,
        stride,
        dtype=config.compute_dtype,
        impl=impl,
        precision=config.precision,
        name=name,
    )


class ResidualUnit(nn.Module):
    """One residual unit; maps ``(main, skip)`` of ``(batch, n, c_in)`` to ``(batch, n / ds, f)``.

    Returns ``(main_out, skip_out)``: the activated output and the pre-normalisation sum.
    """

    config: EncoderConfig
    filters: int
    downsample: int
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(
        self, main: jax.Array, skip: jax.Array, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        act = ACTIVATIONS[cfg.activation]
        if self.downsample > 1:
            impl = conv.resolve_impl(cfg.conv_impl, train, dtype=cfg.dtype)
            skip = conv.max_pool1d(skip, self.downsample, impl)
        if skip.shape[-1] != self.filters:
            skip = _conv(cfg, self.filters, 1, 1, train, "skip_conv")(skip)
        x = _conv(cfg, self.filters, cfg.kernel_size, 1, train, "conv_0")(main)
        x = _batch_norm(cfg, self.bn_axis_name, "bn_0")(x, use_running_average=not train)
        x = act(x)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        x = _conv(cfg, self.filters, cfg.kernel_size, self.downsample, train, "conv_1")(x)
        total = x + skip
        x = _batch_norm(cfg, self.bn_axis_name, "bn_out")(total, use_running_average=not train)
        x = act(x)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        return x, total


class PCLREncoder(nn.Module):
    """ECGs ``(batch, n_samples, n_leads)`` in mV -> embeddings ``(batch, embed_dim)`` (float32).

    ``bn_axis_name`` names the device-mesh axis over which batch statistics are averaged in
    training (global batch norm); ``None`` keeps per-device statistics.
    """

    config: EncoderConfig = EncoderConfig()
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, ecg: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        if ecg.ndim != 3 or ecg.shape[1:] != (cfg.n_samples, cfg.n_leads):
            raise ValueError(
                f"expected ECGs of shape (batch, {cfg.n_samples}, {cfg.n_leads}), got {ecg.shape}"
            )
        act = ACTIVATIONS[cfg.activation]
        x = ecg.astype(cfg.compute_dtype)
        x = _conv(cfg, cfg.stem_filters, cfg.kernel_size, 1, train, "stem_conv")(x)
        if cfg.stem_batch_norm:
            x = _batch_norm(cfg, self.bn_axis_name, "stem_bn")(x, use_running_average=not train)
        x = act(x)
        skip = x
        for i, (filters, ds) in enumerate(zip(cfg.unit_filters, cfg.downsample, strict=True)):
            x, skip = ResidualUnit(cfg, filters, ds, self.bn_axis_name, name=f"unit_{i}")(
                x, skip, train
            )
        return jnp.mean(x.astype(jnp.float32), axis=1)


class ProjectionHead(nn.Module):
    """Embeddings ``(batch, d)`` -> projections ``(batch, sizes[-1])``; ReLU between layers.

    Computed in ``dtype`` at full precision (``lax.Precision.HIGHEST``): float32 by default, also
    under bfloat16 encoder compute, since it is cheap and feeds the loss's similarities directly.
    """

    sizes: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.sizes):
            x = nn.Dense(
                size, dtype=self.dtype, precision=lax.Precision.HIGHEST, name=f"dense_{i}"
            )(x)
            if i < len(self.sizes) - 1:
                x = nn.relu(x)
        return x.astype(jnp.float32)


class PCLRModel(nn.Module):
    """Encoder plus projection head, the model that is trained.

    ``__call__`` returns ``(embed, projection)``: ``(batch, embed_dim)`` and
    ``(batch, head_sizes[-1])``; with empty ``head_sizes`` the projection is the embedding.
    Variables are ``{'params': {'encoder': ..., 'head': ...}, 'batch_stats': {'encoder': ...}}``.
    """

    config: EncoderConfig = EncoderConfig()
    bn_axis_name: str | None = None

    def setup(self):
        self.encoder = PCLREncoder(self.config, self.bn_axis_name)
        self.head = ProjectionHead(self.config.head_sizes) if self.config.head_sizes else None

    def __call__(self, ecg: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        embed = self.encoder(ecg, train)
        projection = self.head(embed) if self.head is not None else embed
        return embed, projection

    def embed(self, ecg: jax.Array) -> jax.Array:
        return self.encoder(ecg, False)


def init_variables(config: EncoderConfig, rng: jax.Array, with_head: bool = True) -> dict:
    """Initial variables of ``PCLRModel`` (``with_head``) or of a bare ``PCLREncoder``."""
    module = PCLRModel(config) if with_head else PCLREncoder(config)
    dummy = jnp.zeros((1, config.n_samples, config.n_leads), jnp.float32)
    return jax.jit(lambda r: module.init(r, dummy, train=False))(rng)


def count_parameters(variables: dict) -> int:
    """Number of scalars in ``params`` and ``batch_stats`` (what Keras' ``count_params`` counts)."""
    return sum(x.size for x in jax.tree_util.tree_leaves(variables))
