"""Reading Keras HDF5 model files (``model.save('x.h5')``) of the PCLR encoder with h5py alone.

Nothing in the file is executed or unpickled: the ``model_config`` attribute is parsed as JSON
(:mod:`pclr_jax.weights.keras_graph` recognises the ResNet in it) and the weights are plain HDF5
datasets
at ``model_weights/<layer>/<...>/<weight>`` listed by each layer group's ``weight_names``
attribute (``conv1d/kernel:0`` in Keras 2, ``conv1d/kernel`` in Keras 3).

The arrays become PCLRModel variables as for every Keras reader
(:mod:`pclr_jax.weights.keras_weights`).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.weights.keras_graph import parse_model_config, trace_resnet
from pclr_jax.weights.keras_weights import KerasModel, assemble_variables, check_no_stray_layers
from pclr_jax.weights.output_layer import H5_ATTRIBUTE


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
        variables = assemble_variables(
            lambda layer: _layer_weights(weights_group, layer), traced.modules, config
        )
        check_no_stray_layers(
            (
                layer
                for layer in read_str_list_attr(weights_group, "layer_names")
                if read_str_list_attr(weights_group[layer], "weight_names")
            ),
            traced.modules,
        )
    return KerasModel(
        config=config,
        variables=variables,
        output_layer=graph.output_name,
        input_name=graph.input_name,
        default_output=marker,
    )
