"""The loss registry: a name maps to a pure loss function, its hyper-parameters and its parameters.

A loss function has the signature::

    fn(z_a, z_b, patient_ids, loss_params, *, axis_name, **hparams) -> (loss, metrics)

with every hyper-parameter a keyword-only argument WITH its default: the signature is the single
source of truth for which hyper-parameters exist and what they default to. Learnable loss
parameters (SigLIP's temperature and bias) come from an optional initialiser
``init_params(**init_hparams) -> dict``, whose keyword-only arguments are hyper-parameters too.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax

from pclr_jax.losses.cmsc import cmsc
from pclr_jax.losses.ntxent import ntxent
from pclr_jax.losses.patient_supcon import patient_supcon
from pclr_jax.losses.siglip import siglip, siglip_init_params
from pclr_jax.losses.vicreg import vicreg

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def _no_params() -> dict:
    return {}


def _keyword_defaults(fn: Callable) -> dict[str, Any]:
    """``fn``'s keyword-only arguments (except ``axis_name``) and their defaults."""
    defaults = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or name == "axis_name":
            continue
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{fn.__qualname__}: hyper-parameter {name!r} needs a default")
        defaults[name] = parameter.default
    return defaults


@dataclasses.dataclass(frozen=True)
class LossDefinition:
    """A registered loss: its function, optional parameter initialiser and a one-line summary."""

    fn: LossFn
    init_params: Callable[..., dict] = _no_params
    summary: str = ""

    @property
    def loss_defaults(self) -> dict[str, Any]:
        """Hyper-parameters of :attr:`fn` with their defaults."""
        return _keyword_defaults(self.fn)

    @property
    def init_defaults(self) -> dict[str, Any]:
        """Hyper-parameters of :attr:`init_params` with their defaults."""
        return _keyword_defaults(self.init_params)

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyper-parameter of the loss with its default."""
        return {**self.loss_defaults, **self.init_defaults}


@dataclasses.dataclass(frozen=True)
class ContrastiveLoss:
    """A loss bound to its hyper-parameters and (optionally) a mesh axis; build with ``get_loss``.

    ``__call__(z_a, z_b, patient_ids, loss_params) -> (loss, metrics)``: ``z_a``, ``z_b``
    ``(local_batch, dim)`` projections of the two views (row ``i`` of both is the same patient),
    ``patient_ids`` ``(local_batch,)`` int32, ``loss_params`` from :meth:`init_params`.
    ``loss`` is a float32 scalar and ``metrics`` a dict of float32 scalars. With ``axis_name`` set
    (inside ``jax.shard_map``) both are this device's share such that ``lax.pmean`` over the axis
    gives the loss of the global batch (see ``docs/losses.md`` for taking gradients).
    """

    name: str
    definition: LossDefinition
    axis_name: str | None
    hparams: Mapping[str, Any]

    def on_axis(self, axis_name: str | None) -> ContrastiveLoss:
        """The same loss, gathering negatives over mesh axis ``axis_name`` (None: one device)."""
        return dataclasses.replace(self, axis_name=axis_name)

    def init_params(self) -> dict:
        """The learnable loss parameters (a dict of float32 scalars; ``{}`` for most losses)."""
        kwargs = {k: self.hparams[k] for k in self.definition.init_defaults}
        return self.definition.init_params(**kwargs)

    def __call__(
        self, z_a: jax.Array, z_b: jax.Array, patient_ids: jax.Array, loss_params: dict
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        kwargs = {k: self.hparams[k] for k in self.definition.loss_defaults}
        return self.definition.fn(
            z_a, z_b, patient_ids, loss_params, axis_name=self.axis_name, **kwargs
        )

    def __hash__(self) -> int:
        return hash((self.name, self.axis_name, tuple(sorted(self.hparams.items()))))


LOSSES: dict[str, LossDefinition] = {
    "ntxent": LossDefinition(ntxent, summary="PCLR/SimCLR NT-Xent, as ml4h's simclr_loss"),
    "patient_supcon": LossDefinition(patient_supcon, summary="multi-positive: same patient"),
    "cmsc": LossDefinition(cmsc, summary="CLOCS contrastive multi-segment coding"),
    "siglip": LossDefinition(siglip, siglip_init_params, summary="pairwise sigmoid loss"),
    "vicreg": LossDefinition(vicreg, summary="variance-invariance-covariance"),
}


def register(
    name: str, fn: LossFn, init_params: Callable[..., dict] = _no_params, summary: str = ""
) -> LossDefinition:
    """Adds a loss to :data:`LOSSES` (for variants defined outside this package)."""
    if name in LOSSES:
        raise ValueError(f"a loss named {name!r} is already registered")
    definition = LossDefinition(fn, init_params, summary)
    definition.defaults  # noqa: B018 -- validates the signature now rather than at first use.
    LOSSES[name] = definition
    return definition


def get_loss(name: str, axis_name: str | None = None, **hparams: Any) -> ContrastiveLoss:
    """The registered loss ``name`` with ``hparams`` over its defaults.

    Args:
      name: a key of :data:`LOSSES`.
      axis_name: the mesh axis to gather negatives over when called inside ``jax.shard_map``;
        None on a single device.
      **hparams: hyper-parameters (``temperature``, ``chunk_size``, ...); unknown names raise a
        ``ValueError`` listing the valid ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(LOSSES))}")
    definition = LOSSES[name]
    defaults = definition.defaults
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in sorted(defaults.items())) or "none"
        raise ValueError(
            f"loss {name!r} has no hyper-parameter(s) {', '.join(unknown)}; valid: {valid}"
        )
    merged = types.MappingProxyType({**defaults, **hparams})
    _check_common_hparams(name, merged)
    return ContrastiveLoss(name, definition, axis_name, merged)


def _check_common_hparams(name: str, hparams: Mapping[str, Any]) -> None:
    if "temperature" in hparams and not hparams["temperature"] > 0:
        raise ValueError(f"loss {name!r}: temperature must be > 0, got {hparams['temperature']!r}")
    chunk = hparams.get("chunk_size")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0):
        raise ValueError(
            f"loss {name!r}: chunk_size must be None (automatic), 0 (dense) or an int >= 1, "
            f"got {chunk!r}"
        )
