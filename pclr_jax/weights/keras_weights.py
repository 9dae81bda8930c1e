"""Keras layer weights -> :class:`~pclr_jax.model.encoder.PCLRModel` variables, shared by the
``.h5`` reader (:mod:`pclr_jax.weights.keras_h5`) and the SavedModel reader
(:mod:`pclr_jax.weights.savedmodel`).

Keras and Flax share the weight layouts used here: Conv1D kernels ``(kernel, in, out)``, Dense
kernels ``(in, out)``; BatchNormalization ``gamma, beta, moving_mean, moving_variance`` are Flax's
``scale, bias`` (params) and ``mean, var`` (batch_stats), with the same
``(x - mean) / sqrt(var + epsilon) * scale + bias``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import jax
import numpy as np

from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.weights.keras_graph import BATCH_NORM, CONV, DENSE

# Keras weight name -> (Flax collection, Flax variable name), per module kind.
WEIGHT_MAP: dict[str, dict[str, tuple[str, str]]] = {
    CONV: {"kernel": ("params", "kernel")},
    BATCH_NORM: {
        "gamma": ("params", "scale"),
        "beta": ("params", "bias"),
        "moving_mean": ("batch_stats", "mean"),
        "moving_variance": ("batch_stats", "var"),
    },
    DENSE: {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
}


@dataclasses.dataclass(frozen=True)
class KerasModel:
    """A PCLR encoder read from a Keras file (``.h5`` or SavedModel).

    ``config`` has ``head_sizes=()`` when the file has no projection head; ``variables`` are in
    :class:`~pclr_jax.model.encoder.PCLRModel` layout (float32 NumPy arrays); ``output_layer`` is
    the name of the file's output layer (``embed`` for the released models, the last Dense layer
    when a head is present) and ``input_name`` that of its input layer. ``default_output`` is
    the marker a file written by pclr-jax carries (``'embed'`` or ``'final'``), ``None`` for
    other files (:mod:`pclr_jax.weights.output_layer`).
    """

    config: EncoderConfig
    variables: dict
    output_layer: str
    input_name: str
    default_output: str | None = None


def expected_shapes(config: EncoderConfig) -> dict:
    """The shape of every variable of ``PCLRModel(config)``, as a tree of tuples."""
    shapes = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes)


def module_shapes(expected: dict, path: tuple[str, ...], kind: str) -> dict[str, tuple]:
    """Keras weight name -> the shape the model needs, for the module at ``path``."""
    shapes = {}
    for keras_name, (collection, flax_name) in WEIGHT_MAP[kind].items():
        node = expected[collection]
        for key in path:
            node = node[key]
        shapes[keras_name] = node[flax_name]
    return shapes


def assemble_variables(
    layer_weights: Callable[[str], dict[str, np.ndarray]],
    modules: dict[tuple[str, ...], tuple[str, str]],
    config: EncoderConfig,
) -> dict:
    """PCLRModel variables from each traced module's Keras layer weights.

    ``layer_weights(layer)`` returns a layer's arrays keyed by their short Keras name
    (``kernel``, ``gamma``, ...); ``modules`` is :attr:`~pclr_jax.weights.keras_graph.
    TracedResNet.modules`. Raises ``ValueError`` naming the layer for a missing or extra weight
    or a shape the graph does not imply.
    """
    expected = expected_shapes(config)
    variables: dict = {"params": {}, "batch_stats": {}}
    for path, (layer, kind) in modules.items():
        arrays = layer_weights(layer)
        wanted = WEIGHT_MAP[kind]
        missing = sorted(set(wanted) - set(arrays))
        extra = sorted(set(arrays) - set(wanted))
        if missing or extra:
            raise ValueError(
                f"layer '{layer}' has weights {sorted(arrays)}; expected {sorted(wanted)}"
            )
        shapes = module_shapes(expected, path, kind)
        for keras_name, (collection, flax_name) in wanted.items():
            if arrays[keras_name].shape != shapes[keras_name]:
                raise ValueError(
                    f"layer '{layer}' weight '{keras_name}' has shape "
                    f"{arrays[keras_name].shape}; the graph implies {shapes[keras_name]}"
                )
            node = variables[collection]
            for key in path:
                node = node.setdefault(key, {})
            node[flax_name] = arrays[keras_name]
    unfilled = sorted(_leaf_paths(expected) - _leaf_paths(variables))
    if unfilled:
        raise ValueError(f"the file's graph leaves model variables {unfilled} without weights")
    return variables


def check_no_stray_layers(layers_with_weights: Iterable[str], modules: dict) -> None:
    """``ValueError`` naming the first layer that holds weights but is not in the traced graph."""
    used = {layer for layer, _ in modules.values()}
    for layer in layers_with_weights:
        if layer not in used:
            raise ValueError(f"layer '{layer}' has weights but is not part of the graph")


def _leaf_paths(tree: dict) -> set[str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))
    return {jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in leaves}
