"""Reading Keras HDF5 model files (``model.save('x.h5')``) of the PCLR encoder with h5py alone.

Nothing in the file is executed or unpickled: the ``model_config`` attribute is parsed as JSON
(:mod:`pclr_jax.weights.keras_graph` recognises the ResNet in it) and the weights are plain HDF5
datasets
at ``model_weights/<layer>/<...>/<weight>`` listed by each layer group's ``weight_names``
attribute (``conv1d/kernel:0`` in Keras 2, ``conv1d/kernel`` in Keras 3).

Keras and Flax share the weight layouts used here: Conv1D kernels ``(kernel, in, out)``, Dense
kernels ``(in, out)``; BatchNormalization ``gamma, beta, moving_mean, moving_variance`` are Flax's
``scale, bias`` (params) and ``mean, var`` (batch_stats), with the same
``(x - mean) / sqrt(var + epsilon) * scale + bias``.
"""

from __future__ import annotations

import dataclasses
import os

import h5py
import jax
import numpy as np

from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.weights.keras_graph import BATCH_NORM, CONV, DENSE, parse_model_config, trace_resnet
from pclr_jax.weights.output_layer import H5_ATTRIBUTE

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
    """A PCLR encoder read from a Keras file.

    ``config`` has ``head_sizes=()`` when the file has no projection head; ``variables`` are in
    :class:`~pclr_jax.model.encoder.PCLRModel` layout (float32 NumPy arrays); ``output_layer`` is
    the
    name of the file's output layer (``embed`` for the released models, the last Dense layer
    when a head is present) and ``input_name`` that of its input layer. ``default_output`` is
    the marker a file written by pclr-jax carries (``'embed'`` or ``'final'``), ``None`` for
    other files (:mod:`pclr_jax.weights.output_layer`).
    """

    config: EncoderConfig
    variables: dict
    output_layer: str
    input_name: str
    default_output: str | None = None


def read_str_list_attr(group: h5py.Group, name: str) -> list[str]:
    """A list-of-strings attribute, also when Keras split it into ``name0``, ``name1``, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read_text_attr(attrs: h5py.AttributeManager, name: str) -> str | None:
    value = attrs.get(name)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _layer_weights(weights_group: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    """The arrays of one layer keyed by their short Keras name (``kernel``, ``gamma``, ...)."""
    if layer not in weights_group:
        raise ValueError(f"layer '{layer}' has no weights in the file's model_weights")
    group = weights_group[layer]
    arrays = {}
    for full_name in read_str_list_attr(group, "weight_names"):
        short = full_name.split("/")[-1].split(":")[0]
        if short in arrays:
            raise ValueError(f"layer '{layer}' lists weight '{short}' twice")
        if full_name not in group:
            raise ValueError(f"layer '{layer}' lists weight '{full_name}' but the file lacks it")
        arrays[short] = np.asarray(group[full_name], dtype=np.float32)
    return arrays


def _expected_shapes(config: EncoderConfig) -> dict:
    shapes = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes)


def _assemble_variables(weights_group: h5py.Group, modules: dict, config: EncoderConfig) -> dict:
    """Reads every traced module's weights and checks each shape against the model's."""
    expected = _expected_shapes(config)
    variables: dict = {"params": {}, "batch_stats": {}}
    for path, (layer, kind) in modules.items():
        arrays = _layer_weights(weights_group, layer)
        wanted = WEIGHT_MAP[kind]
        missing = sorted(set(wanted) - set(arrays))
        extra = sorted(set(arrays) - set(wanted))
        if missing or extra:
            raise ValueError(
                f"layer '{layer}' has weights {sorted(arrays)}; expected {sorted(wanted)}"
            )
        for keras_name, (collection, flax_name) in wanted.items():
            shape = expected[collection]
            for key in path:
                shape = shape[key]
            shape = shape[flax_name]
            if arrays[keras_name].shape != shape:
                raise ValueError(
                    f"layer '{layer}' weight '{keras_name}' has shape "
                    f"{arrays[keras_name].shape}; the graph implies {shape}"
                )
            node = variables[collection]
            for key in path:
                node = node.setdefault(key, {})
            node[flax_name] = arrays[keras_name]
    unfilled = sorted(_leaf_paths(expected) - _leaf_paths(variables))
    if unfilled:
        raise ValueError(f"the file's graph leaves model variables {unfilled} without weights")
    return variables


def _leaf_paths(tree: dict) -> set[str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))
    return {jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in leaves}


def read_keras_h5(path: str | os.PathLike) -> KerasModel:
    """Reads a PCLR encoder (with or without projection head) from a Keras ``.h5`` file.

    Works for files written by Keras 2.x (tf.keras) and Keras 3, and by
    :func:`pclr_jax.weights.keras_export.write_keras_h5`. Raises ``ValueError`` naming the layer
    when the
    graph is not the PCLR ResNet, a layer type or option is unsupported, or a weight is missing
    or has the wrong shape.
    """
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file (Keras 3 '.keras' archives are not read; save the model "
            "with model.save('model.h5'))"
        )
    with h5py.File(path, "r") as f:
        model_config = _read_text_attr(f.attrs, "model_config")
        marker = _read_text_attr(f.attrs, H5_ATTRIBUTE)
        if model_config is None:
            raise ValueError(
                f"{path} has no model_config attribute: a weights-only file cannot be converted "
                "because the layer graph is unknown"
            )
        graph = parse_model_config(model_config)
        traced = trace_resnet(graph)
        config = EncoderConfig(**traced.config)
        weights_group = f["model_weights"] if "model_weights" in f else f
        variables = _assemble_variables(weights_group, traced.modules, config)
        used = {layer for layer, _ in traced.modules.values()}
        for layer in read_str_list_attr(weights_group, "layer_names"):
            if layer not in used and read_str_list_attr(weights_group[layer], "weight_names"):
                raise ValueError(f"layer '{layer}' has weights but is not part of the graph")
    return KerasModel(
        config=config,
        variables=variables,
        output_layer=graph.output_name,
        input_name=graph.input_name,
        default_output=marker,
    )
