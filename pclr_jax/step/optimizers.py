"""Optimizers for contrastive pretraining: optax Adam, AdamW, LARS and LAMB with PCLR's schedule.

``make_optimizer(opt_cfg, global_batch_pairs, total_steps)`` builds::

    clip_by_global_norm(grad_clip_norm)  ->  inject_hyperparams(<name>)(learning_rate=schedule, ...)

* The learning rate follows linear warm-up from 0 over ``warmup_steps`` and then a cosine decay to
  0 at ``total_steps`` (``schedule='cosine'``), or stays at its peak (``'constant'``).
* The peak is ``learning_rate`` scaled with the global batch (``lr_scaling``):
  ``'linear'``: ``lr * B / base_batch_pairs`` (Goyal et al. 2017; SimCLR's LARS recipe is
  ``0.3 * B / 256``), ``'sqrt'``: ``lr * sqrt(B / base_batch_pairs)`` (SimCLR found it better for
  small batches and long training), ``'none'``: ``lr``. ``B`` counts PAIRS (positive pairs per
  global batch), as SimCLR counts images per view. Why: see ``docs/training_step.md``.
* Weight decay (AdamW, LARS, LAMB) applies to convolution and dense kernels only: batch-norm scales
  and offsets, biases and the loss's own parameters (SigLIP's temperature and bias) are excluded, as
  are they from LARS' trust-ratio adaptation (SimCLR's convention).
* The current learning rate lives in the optimizer state (``inject_hyperparams``), so the train
  step reports it without being told the schedule: :func:`current_learning_rate`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "lars", "lamb")
SCHEDULES = ("cosine", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_learning_rate(
    learning_rate: float, global_batch_pairs: int, lr_scaling: str, base_batch_pairs: int
) -> float:
    """The peak learning rate for a global batch of ``global_batch_pairs`` positive pairs."""
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {lr_scaling!r}")
    if global_batch_pairs < 1 or base_batch_pairs < 1:
        raise ValueError("global_batch_pairs and base_batch_pairs must be >= 1")
    ratio = global_batch_pairs / base_batch_pairs
    if lr_scaling == "linear":
        return learning_rate * ratio
    if lr_scaling == "sqrt":
        return learning_rate * math.sqrt(ratio)
    return learning_rate


def make_schedule(
    peak_learning_rate: float, warmup_steps: int, total_steps: int, schedule: str
) -> optax.Schedule:
    """Step -> learning rate: linear warm-up from 0 to the peak, then cosine to 0 or constant.

    With warm-up, step ``s < warmup_steps`` has ``peak * s / warmup_steps``; the cosine part is
    ``peak * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2``, 0 from ``total_steps`` on.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak_learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=total_steps,
            end_value=0.0,
        )
    if warmup_steps == 0:
        return optax.constant_schedule(peak_learning_rate)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_learning_rate, warmup_steps),
            optax.constant_schedule(peak_learning_rate),
        ],
        boundaries=[warmup_steps],
    )


def decay_mask(params: Any) -> Any:
    """True for the leaves that get weight decay: convolution and dense ``kernel`` weights."""

    def is_kernel(path, _) -> bool:
        last = path[-1]
        return getattr(last, "key", getattr(last, "name", None)) == "kernel"

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def _base_optimizer(opt_cfg: ml_collections.ConfigDict, schedule: optax.Schedule):
    name = opt_cfg.name
    if name == "adam":
        factory = optax.inject_hyperparams(optax.adam)
        return factory(learning_rate=schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)
    if name == "adamw":
        factory = optax.inject_hyperparams(optax.adamw, static_args="mask")
        return factory(
            learning_rate=schedule,
            b1=opt_cfg.b1,
            b2=opt_cfg.b2,
            eps=opt_cfg.eps,
            weight_decay=opt_cfg.weight_decay,
            mask=decay_mask,
        )
    if name == "lamb":
        factory = optax.inject_hyperparams(optax.lamb, static_args="mask")
        return factory(
            learning_rate=schedule,
            b1=opt_cfg.b1,
            b2=opt_cfg.b2,
            eps=opt_cfg.eps,
            weight_decay=opt_cfg.weight_decay,
            mask=decay_mask,
        )
    # lars: SGD with momentum and a layer-wise trust ratio; b1 is its momentum.
    factory = optax.inject_hyperparams(
        optax.lars, static_args=("weight_decay_mask", "trust_ratio_mask")
    )
    return factory(
        learning_rate=schedule,
        weight_decay=opt_cfg.weight_decay,
        weight_decay_mask=decay_mask,
        trust_ratio_mask=decay_mask,
        momentum=opt_cfg.b1,
    )


def make_optimizer(
    opt_cfg: ml_collections.ConfigDict, global_batch_pairs: int, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its learning-rate schedule (module docstring).

    Args:
      opt_cfg: ``name`` (adam|adamw|lars|lamb), ``learning_rate`` (before scaling),
        ``lr_scaling`` (none|linear|sqrt), ``base_batch_pairs``, ``warmup_steps``, ``schedule``
        (cosine|constant), ``weight_decay`` (ignored by adam), ``grad_clip_norm`` (None or 0 = no
        clipping), ``b1``, ``b2``, ``eps`` (lars uses only ``b1``, as momentum).
      global_batch_pairs: positive pairs per global batch (``2 x`` as many ECGs).
      total_steps: length of the run in optimizer steps.

    Returns:
      ``(optimizer, schedule)``; ``schedule(step)`` is the learning rate used at ``step``.
    """
    if opt_cfg.name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {opt_cfg.name!r}")
    if opt_cfg.name == "adam" and opt_cfg.get("weight_decay", 0.0):
        raise ValueError("adam has no weight decay; use adamw (decoupled) or set weight_decay=0")
    peak = scaled_learning_rate(
        opt_cfg.learning_rate, global_batch_pairs, opt_cfg.lr_scaling, opt_cfg.base_batch_pairs
    )
    schedule = make_schedule(peak, opt_cfg.warmup_steps, total_steps, opt_cfg.schedule)
    optimizer = _base_optimizer(opt_cfg, schedule)
    if opt_cfg.get("grad_clip_norm"):
        optimizer = optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip_norm), optimizer)
    return optimizer, schedule


def fixed_adam_config() -> ml_collections.ConfigDict:
    """A fixed optimizer for measurements (``pclr bench``, compiled-program checks): Adam at a
    constant 1e-3 with no batch scaling, eps 1e-7 (Keras'), clipping at global norm 1."""
    return ml_collections.ConfigDict(
        dict(
            name="adam",
            learning_rate=1e-3,
            lr_scaling="none",
            base_batch_pairs=256,
            warmup_steps=0,
            schedule="constant",
            weight_decay=0.0,
            grad_clip_norm=1.0,
            b1=0.9,
            b2=0.999,
            eps=1e-7,
        )
    )


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate the last ``update`` used (from a :func:`make_optimizer` state).

    Before the first update it is the rate of step 0.
    """
    learning_rate = optax.tree_utils.tree_get(
        opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
    )
    if learning_rate is None:
        raise ValueError("the optimizer state has no injected learning_rate (use make_optimizer)")
    return learning_rate
