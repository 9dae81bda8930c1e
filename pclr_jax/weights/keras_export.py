"""Writing a PCLR encoder as a Keras HDF5 model file, with h5py alone.

The file has the layout tf.keras 2.4 writes (the format of the released PCLR files), which both
tf.keras 2.x and Keras 3 (``keras.models.load_model``) load: a ``model_config`` JSON graph of a
functional model generated from the :class:`~pclr_jax.model.encoder.EncoderConfig` (layer names as
Keras
gives them: ``ecg``, ``conv1d``, ``conv1d_1``, ``batch_normalization``, ..., ``embed``, and
``projection_0`` ... ``projection`` for a head) and the weights under
``model_weights/<layer>/<layer>/<weight>:0``.

Keras assigns the weights of a legacy ``.h5`` file to its layers by position (the order of
``model.layers``), so the layers are listed in the order Keras computes for a functional graph:
by decreasing depth (longest path to the output), ties broken by first visit in a depth-first
walk from the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import h5py
import numpy as np

from pclr_jax import __version__
from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.weights.keras_weights import WEIGHT_MAP
from pclr_jax.weights.output_layer import H5_ATTRIBUTE, TRAINED_OUTPUT, check_output

# The format written: that of tf.keras 2.4 (TensorFlow kernel layout, channels last).
KERAS_FORMAT_VERSION = "2.4.0"
KERAS_FORMAT_BACKEND = "tensorflow"

_KERAS_WEIGHT_ORDER = {
    "conv": ("kernel",),
    "batch_norm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_ACTIVATION_NAMES = {"relu": "relu", "swish": "swish"}


@dataclasses.dataclass
class _Node:
    name: str
    class_name: str
    config: dict
    inputs: list[str]
    module: tuple[tuple[str, ...], str] | None = None  # (flax path, kind)


class _GraphBuilder:
    """Creates layers with Keras' automatic names (``conv1d``, ``conv1d_1``, ...)."""

    def __init__(self, config: EncoderConfig):
        self.config = config
        self.nodes: dict[str, _Node] = {}
        self.counts: dict[str, int] = {}

    def add(self, class_name, base_name, layer_config, inputs, module=None, name=None) -> str:
        if name is None:
            count = self.counts.get(base_name, 0)
            self.counts[base_name] = count + 1
            name = base_name if count == 0 else f"{base_name}_{count}"
        common = {"name": name, "dtype": "float32"}
        if class_name != "InputLayer":
            common = {"name": name, "trainable": True, "dtype": "float32"}
        full = {**common, **layer_config}
        self.nodes[name] = _Node(name, class_name, full, list(inputs), module)
        return name

    def conv(self, x: str, filters: int, kernel: int, stride: int, path) -> str:
        return self.add(
            "Conv1D",
            "conv1d",
            {
                "filters": filters,
                "kernel_size": [kernel],
                "strides": [stride],
                "padding": "same",
                "data_format": "channels_last",
                "dilation_rate": [1],
                "groups": 1,
                "activation": "linear",
                "use_bias": False,
                "kernel_initializer": {"class_name": "HeNormal", "config": {"seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}},
                "kernel_regularizer": None,
                "bias_regularizer": None,
                "activity_regularizer": None,
                "kernel_constraint": None,
                "bias_constraint": None,
            },
            [x],
            (path, "conv"),
        )

    def batch_norm(self, x: str, path) -> str:
        cfg = self.config
        return self.add(
            "BatchNormalization",
            "batch_normalization",
            {
                "axis": [2],
                "momentum": cfg.bn_momentum,
                "epsilon": cfg.bn_epsilon,
                "center": True,
                "scale": True,
                "beta_initializer": {"class_name": "Zeros", "config": {}},
                "gamma_initializer": {"class_name": "Ones", "config": {}},
                "moving_mean_initializer": {"class_name": "Zeros", "config": {}},
                "moving_variance_initializer": {"class_name": "Ones", "config": {}},
                "beta_regularizer": None,
                "gamma_regularizer": None,
                "beta_constraint": None,
                "gamma_constraint": None,
            },
            [x],
            (path, "batch_norm"),
        )

    def activation(self, x: str) -> str:
        name = _ACTIVATION_NAMES[self.config.activation]
        return self.add("Activation", "activation", {"activation": name}, [x])

    def dropout(self, x: str) -> str:
        if self.config.dropout <= 0:
            return x
        layer_config = {"rate": self.config.dropout, "noise_shape": None, "seed": None}
        return self.add("Dropout", "dropout", layer_config, [x])

    def dense(self, x: str, units: int, activation: str, path, name: str) -> str:
        return self.add(
            "Dense",
            "dense",
            {
                "units": units,
                "activation": activation,
                "use_bias": True,
                "kernel_initializer": {"class_name": "HeNormal", "config": {"seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}},
                "kernel_regularizer": None,
                "bias_regularizer": None,
                "activity_regularizer": None,
                "kernel_constraint": None,
                "bias_constraint": None,
            },
            [x],
            (path, "dense"),
            name=name,
        )


def build_graph(config: EncoderConfig, with_head: bool) -> tuple[dict[str, _Node], str]:
    """The Keras layer graph of the encoder (creation order as in ml4h); returns it and its output.

    Within a unit the skip path's layers are created first, as ml4h's ResidualUnit does, so the
    12-lead graph gets exactly the released layer names.
    """
    b = _GraphBuilder(config)
    x = b.add(
        "InputLayer",
        "input",
        {
            "batch_input_shape": [None, config.n_samples, config.n_leads],
            "sparse": False,
            "ragged": False,
        },
        [],
        name="ecg",
    )
    x = b.conv(x, config.stem_filters, config.kernel_size, 1, ("encoder", "stem_conv"))
    if config.stem_batch_norm:
        x = b.batch_norm(x, ("encoder", "stem_bn"))
    x = skip = b.activation(x)
    width = config.stem_filters
    for i, (filters, stride) in enumerate(zip(config.unit_filters, config.downsample, strict=True)):
        path = ("encoder", f"unit_{i}")
        if stride > 1:
            skip = b.add(
                "MaxPooling1D",
                "max_pooling1d",
                {
                    "strides": [stride],
                    "pool_size": [stride],
                    "padding": "same",
                    "data_format": "channels_last",
                },
                [skip],
            )
        if width != filters:
            skip = b.conv(skip, filters, 1, 1, (*path, "skip_conv"))
        x = b.conv(x, filters, config.kernel_size, 1, (*path, "conv_0"))
        x = b.batch_norm(x, (*path, "bn_0"))
        x = b.dropout(b.activation(x))
        x = b.conv(x, filters, config.kernel_size, stride, (*path, "conv_1"))
        x = skip = b.add("Add", "add", {}, [x, skip])
        x = b.batch_norm(x, (*path, "bn_out"))
        x = b.dropout(b.activation(x))
        width = filters
    x = b.add(
        "GlobalAveragePooling1D", "embed", {"data_format": "channels_last"}, [x], name="embed"
    )
    if with_head:
        sizes = config.head_sizes
        for i, units in enumerate(sizes):
            last = i == len(sizes) - 1
            name = "projection" if last else f"projection_{i}"
            x = b.dense(x, units, "linear" if last else "relu", ("head", f"dense_{i}"), name)
    return b.nodes, x


def keras_layer_order(nodes: dict[str, _Node], output: str) -> list[str]:
    """Layer names in the order Keras lists a functional model's layers (see module doc)."""
    visit_index: dict[str, int] = {}

    def visit(name: str) -> None:
        if name in visit_index:
            return
        visit_index[name] = len(visit_index)
        for parent in nodes[name].inputs:
            visit(parent)

    visit(output)
    consumers: dict[str, list[str]] = {name: [] for name in nodes}
    for node in nodes.values():
        for parent in node.inputs:
            consumers[parent].append(node.name)
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            depth[name] = max((depth_of(c) + 1 for c in consumers[name]), default=0)
        return depth[name]

    return sorted(nodes, key=lambda name: (-depth_of(name), visit_index[name]))


def model_config(config: EncoderConfig, with_head: bool) -> tuple[dict, list[_Node]]:
    """The Keras 2.4 ``model_config`` dict and the graph's layers in Keras order."""
    nodes, output = build_graph(config, with_head)
    ordered = [nodes[name] for name in keras_layer_order(nodes, output)]
    layers = [
        {
            "class_name": node.class_name,
            "config": node.config,
            "name": node.name,
            "inbound_nodes": [[[parent, 0, 0, {}] for parent in node.inputs]]
            if node.inputs
            else [],
        }
        for node in ordered
    ]
    graph = {
        "class_name": "Functional",
        "config": {
            "name": "pclr_encoder",
            "layers": layers,
            "input_layers": [["ecg", 0, 0]],
            "output_layers": [[output, 0, 0]],
        },
        "keras_version": KERAS_FORMAT_VERSION,
        "backend": KERAS_FORMAT_BACKEND,
    }
    return graph, ordered


def _module_arrays(variables: dict, path: tuple[str, ...], kind: str) -> list[np.ndarray]:
    """The Keras-ordered weights of one Flax module as float32 NumPy arrays."""
    flax_names = WEIGHT_MAP[kind]
    arrays = []
    for keras_name in _KERAS_WEIGHT_ORDER[kind]:
        collection, flax_name = flax_names[keras_name]
        node: Any = variables[collection]
        for key in path:
            node = node[key]
        arrays.append(np.asarray(node[flax_name], dtype=np.float32))
    return arrays


def write_keras_h5(
    path: str | os.PathLike,
    config: EncoderConfig,
    variables: dict,
    default_output: str = TRAINED_OUTPUT,
) -> str:
    """Writes ``variables`` (:class:`~pclr_jax.model.encoder.PCLRModel` layout) as a Keras ``.h5``
    file.

    The projection head is included iff ``variables['params']`` has ``'head'`` and
    ``config.head_sizes`` is non-empty; the file's output is then ``projection``, else ``embed``.
    Weights are written as float32 exactly as given. Returns the name of the output layer.
    ``default_output`` is recorded as the root attribute ``pclr_jax_default_output``: the output
    pclr-jax's ``load_encoder`` gives by default (:mod:`pclr_jax.weights.output_layer`; Keras itself
    ignores it and predicts the file's output).
    """
    with_head = bool(config.head_sizes) and "head" in variables["params"]
    graph, ordered = model_config(config, with_head)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = KERAS_FORMAT_VERSION.encode("utf-8")
        f.attrs["backend"] = KERAS_FORMAT_BACKEND.encode("utf-8")
        f.attrs["model_config"] = json.dumps(graph).encode("utf-8")
        f.attrs["pclr_jax_version"] = __version__.encode("utf-8")
        f.attrs[H5_ATTRIBUTE] = check_output(default_output).encode("utf-8")
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([n.name.encode("utf-8") for n in ordered])
        weights.attrs["backend"] = KERAS_FORMAT_BACKEND.encode("utf-8")
        weights.attrs["keras_version"] = KERAS_FORMAT_VERSION.encode("utf-8")
        for node in ordered:
            group = weights.create_group(node.name)
            if node.module is None:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            module_path, kind = node.module
            names = [f"{node.name}/{w}:0" for w in _KERAS_WEIGHT_ORDER[kind]]
            group.attrs["weight_names"] = np.array([n.encode("utf-8") for n in names])
            for name, array in zip(
                names, _module_arrays(variables, module_path, kind), strict=True
            ):
                group.create_dataset(name, data=array)
    return ordered[-1].name
