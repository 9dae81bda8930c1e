"""Keras functional-model graphs (the JSON ``model_config`` of a ``.h5`` file) as plain data.

Only JSON is parsed: no Keras, no TensorFlow, nothing deserialised that could execute code.
Both serialisations are understood:

* Keras 2.x: ``inbound_nodes = [[[layer, node_index, tensor_index, kwargs], ...]]`` and tuples
  either as JSON lists or as ``{"class_name": "__tuple__", "items": [...]}`` (SavedModel metadata);
* Keras 3: ``inbound_nodes = [{"args": [...], "kwargs": {...}}]`` whose arguments hold
  ``{"class_name": "__keras_tensor__", "config": {"shape": ..., "keras_history": [layer, node,
  tensor]}}`` (possibly nested in lists, as for ``Add``).

:func:`trace_resnet` then follows the graph from its input and recognises the PCLR / Ribeiro 1-D
ResNet (see :mod:`pclr_jax.model.encoder`), returning the encoder configuration it implies and
which Keras
layer holds each Flax module's weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

# Flax module kinds a Keras layer's weights are mapped to.
CONV, BATCH_NORM, DENSE = "conv", "batch_norm", "dense"

_ACTIVATION_NAMES = {"relu": "relu", "swish": "swish", "silu": "swish"}


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """An input of a layer: output ``tensor_index`` of call ``node_index`` of ``layer``.

    ``shape`` is the ``(batch, ...)`` shape Keras 3 records for the tensor (``None`` in Keras 2).
    """

    layer: str
    node_index: int = 0
    tensor_index: int = 0
    shape: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of the graph: its class, its JSON config and the tensors it consumes."""

    name: str
    class_name: str
    config: dict
    inputs: tuple[TensorRef, ...]


@dataclasses.dataclass(frozen=True)
class Graph:
    """A single-input, single-output functional model; ``layers`` keeps the file's order."""

    name: str
    layers: dict[str, Layer]
    input_name: str
    output_name: str

    def consumers(self, name: str) -> list[Layer]:
        return [
            layer for layer in self.layers.values() if any(t.layer == name for t in layer.inputs)
        ]


def decode_tuples(obj: Any) -> Any:
    """Replaces every ``{"class_name": "__tuple__", "items": [...]}`` by a list, recursively."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__tuple__" and "items" in obj:
            return [decode_tuples(item) for item in obj["items"]]
        return {key: decode_tuples(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [decode_tuples(item) for item in obj]
    return obj


def _keras3_tensors(obj: Any) -> list[TensorRef]:
    """Every ``__keras_tensor__`` in a Keras 3 call's arguments, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            config = obj["config"]
            layer, node_index, tensor_index = config["keras_history"]
            shape = config.get("shape")
            return [TensorRef(layer, node_index, tensor_index, _shape(shape))]
        return [t for value in obj.values() for t in _keras3_tensors(value)]
    if isinstance(obj, list):
        return [t for item in obj for t in _keras3_tensors(item)]
    return []


def _shape(shape: list | None) -> tuple | None:
    return None if shape is None else tuple(shape)


def _parse_inputs(name: str, inbound_nodes: list) -> tuple[TensorRef, ...]:
    if not inbound_nodes:
        return ()
    if len(inbound_nodes) != 1:
        raise ValueError(
            f"layer '{name}' is called {len(inbound_nodes)} times; shared layers are not supported"
        )
    node = inbound_nodes[0]
    if isinstance(node, dict):
        refs = _keras3_tensors({"args": node.get("args", []), "kwargs": node.get("kwargs", {})})
    elif isinstance(node, list):
        refs = []
        for entry in node:
            if not isinstance(entry, list) or len(entry) < 3:
                raise ValueError(f"layer '{name}' has an unreadable inbound node {entry!r}")
            refs.append(TensorRef(entry[0], int(entry[1]), int(entry[2])))
    else:
        raise ValueError(f"layer '{name}' has an unreadable inbound node {node!r}")
    for ref in refs:
        if ref.node_index != 0 or ref.tensor_index != 0:
            raise ValueError(
                f"layer '{name}' reads output {ref.tensor_index} of call {ref.node_index} of "
                f"'{ref.layer}'; only single-call, single-output layers are supported"
            )
    return tuple(refs)


def _single_endpoint(value: Any, what: str) -> str:
    """The layer name of a model's only input or output (``[[n, 0, 0]]`` or ``[n, 0, 0]``)."""
    value = decode_tuples(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or len(value) != 1:
        raise ValueError(f"expected a model with one {what}, found {value!r}")
    return value[0][0]


def parse_model_config(model_config: str | bytes | dict) -> Graph:
    """Parses a functional model's ``model_config`` (JSON text or already-decoded dict)."""
    if isinstance(model_config, bytes):
        model_config = model_config.decode("utf-8")
    if isinstance(model_config, str):
        model_config = json.loads(model_config)
    model_config = decode_tuples(model_config)
    if model_config.get("class_name") not in ("Functional", "Model"):
        raise ValueError(
            f"expected a functional Keras model, found class '{model_config.get('class_name')}'"
        )
    config = model_config["config"]
    layers: dict[str, Layer] = {}
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        if name in layers:
            raise ValueError(f"layer name '{name}' appears twice in the model config")
        layers[name] = Layer(
            name=name,
            class_name=entry["class_name"],
            config=entry.get("config", {}),
            inputs=_parse_inputs(name, entry.get("inbound_nodes", [])),
        )
    for layer in layers.values():
        for ref in layer.inputs:
            if ref.layer not in layers:
                raise ValueError(f"layer '{layer.name}' reads unknown layer '{ref.layer}'")
    return Graph(
        name=config.get("name", ""),
        layers=layers,
        input_name=_single_endpoint(config["input_layers"], "input"),
        output_name=_single_endpoint(config["output_layers"], "output"),
    )


@dataclasses.dataclass(frozen=True)
class TracedResNet:
    """What :func:`trace_resnet` recognised in a graph.

    ``config`` holds :class:`~pclr_jax.model.encoder.EncoderConfig` keyword arguments; ``modules``
    maps
    each Flax module path (e.g. ``('encoder', 'unit_0', 'conv_1')``, ``('head', 'dense_0')``) to
    ``(keras_layer_name, kind)`` with kind one of ``conv``, ``batch_norm``, ``dense``;
    ``shapes`` is each traced layer's output shape without the batch axis.
    """

    config: dict[str, Any]
    modules: dict[tuple[str, ...], tuple[str, str]]
    shapes: dict[str, tuple[int, ...]]


class _Tracer:
    """Walks a :class:`Graph` from its input, checking each layer against the PCLR ResNet."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.visited: set[str] = set()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.modules: dict[tuple[str, ...], tuple[str, str]] = {}
        self.activation: str | None = None
        self.bn_params: tuple[float, float] | None = None
        self.dropout_rates: dict[str, float] = {}

    def visit(self, layer: Layer, shape: tuple[int, ...]) -> None:
        if layer.name in self.visited:
            raise ValueError(f"layer '{layer.name}' is reached twice; not a PCLR ResNet graph")
        self.visited.add(layer.name)
        self.shapes[layer.name] = shape

    def next_layer(self, layer: Layer) -> Layer:
        consumers = self.graph.consumers(layer.name)
        if len(consumers) != 1:
            names = [c.name for c in consumers]
            raise ValueError(
                f"layer '{layer.name}' feeds {names}; the PCLR ResNet expects one layer here"
            )
        return consumers[0]

    @staticmethod
    def expect(layer: Layer, *class_names: str) -> None:
        if layer.class_name not in class_names:
            raise ValueError(
                f"layer '{layer.name}' is a {layer.class_name}; expected "
                f"{' or '.join(class_names)} at this point of the PCLR ResNet"
            )

    def conv(self, layer: Layer, in_shape: tuple[int, int], kernel: int | None, path) -> int:
        """Checks a Conv1D (no bias, 'same', linear); returns its stride."""
        self.expect(layer, "Conv1D")
        cfg = layer.config
        k = _single_int(layer, cfg, "kernel_size")
        stride = _single_int(layer, cfg, "strides")
        if kernel is not None and k != kernel:
            raise ValueError(f"layer '{layer.name}' has kernel size {k}; expected {kernel}")
        checks = {
            "padding": (cfg.get("padding"), "same"),
            "use_bias": (cfg.get("use_bias"), False),
            "activation": (cfg.get("activation", "linear"), "linear"),
            "dilation_rate": (_single_int(layer, cfg, "dilation_rate", 1), 1),
            "groups": (cfg.get("groups", 1), 1),
            "data_format": (cfg.get("data_format", "channels_last"), "channels_last"),
        }
        for key, (found, wanted) in checks.items():
            if found != wanted:
                raise ValueError(
                    f"layer '{layer.name}' (Conv1D) has {key}={found!r}; only {wanted!r} is "
                    "supported"
                )
        filters = int(cfg["filters"])
        self.visit(layer, (math.ceil(in_shape[0] / stride), filters))
        self.modules[path] = (layer.name, CONV)
        return stride

    def batch_norm(self, layer: Layer, in_shape: tuple[int, ...], path) -> None:
        self.expect(layer, "BatchNormalization")
        cfg = layer.config
        axis = cfg.get("axis", -1)
        axis = axis if isinstance(axis, list) else [axis]
        if axis not in ([-1], [len(in_shape)]):
            raise ValueError(f"layer '{layer.name}' normalises axis {axis}; expected the last")
        for key in ("center", "scale"):
            if not cfg.get(key, True):
                raise ValueError(f"layer '{layer.name}' has {key}=False; not supported")
        if cfg.get("renorm", False):
            raise ValueError(f"layer '{layer.name}' uses batch renormalisation; not supported")
        params = (float(cfg.get("epsilon", 1e-3)), float(cfg.get("momentum", 0.99)))
        if self.bn_params is None:
            self.bn_params = params
        elif params != self.bn_params:
            raise ValueError(
                f"layer '{layer.name}' has (epsilon, momentum) {params}; other batch norms have "
                f"{self.bn_params} and one value is supported"
            )
        self.visit(layer, in_shape)
        self.modules[path] = (layer.name, BATCH_NORM)

    def activate(self, layer: Layer, in_shape: tuple[int, ...]) -> None:
        self.expect(layer, "Activation", "ReLU")
        if layer.class_name == "ReLU":
            cfg = layer.config
            if (
                cfg.get("max_value") is not None
                or cfg.get("negative_slope", 0)
                or cfg.get("threshold", 0)
            ):
                raise ValueError(f"layer '{layer.name}' is a clipped or leaky ReLU; not supported")
            name = "relu"
        else:
            found = layer.config.get("activation")
            if found not in _ACTIVATION_NAMES:
                raise ValueError(
                    f"layer '{layer.name}' uses activation {found!r}; supported: "
                    f"{sorted(_ACTIVATION_NAMES)}"
                )
            name = _ACTIVATION_NAMES[found]
        if self.activation is None:
            self.activation = name
        elif name != self.activation:
            raise ValueError(
                f"layer '{layer.name}' uses {name} but earlier layers use {self.activation}"
            )
        self.visit(layer, in_shape)

    def maybe_dropout(self, layer: Layer, in_shape: tuple[int, ...]) -> Layer:
        """Visits ``layer``'s consumer if it is Dropout and returns the last layer of the pair."""
        following = self.graph.consumers(layer.name)
        if len(following) == 1 and following[0].class_name == "Dropout":
            dropout = following[0]
            cfg = dropout.config
            if cfg.get("noise_shape") is not None:
                raise ValueError(f"layer '{dropout.name}' has a noise_shape; not supported")
            self.dropout_rates[dropout.name] = float(cfg.get("rate", 0.0))
            self.visit(dropout, in_shape)
            return dropout
        return layer


def _single_int(layer: Layer, cfg: dict, key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"layer '{layer.name}' has a {len(value)}-d {key} {value}")
        value = value[0]
    if value is None:
        raise ValueError(f"layer '{layer.name}' has no {key}")
    return int(value)


def _unit_samples(n_samples: int, strides: list[int]) -> tuple[int, ...]:
    """``unit_samples`` for which :attr:`EncoderConfig.downsample` gives ``strides``.

    ml4h derives each stride as ``samples_in // samples_out``; the released models use
    (1024, 256, 64, 16) for both 4096 and 2500 input samples, so those values are kept when they
    give the same strides, otherwise ``samples_in // stride`` is used.
    """
    candidates = [(1024, 256, 64, 16)[: len(strides)]] if len(strides) <= 4 else []
    candidates.append(())
    for candidate in candidates:
        samples_in, chosen = n_samples, []
        for i, stride in enumerate(strides):
            samples_out = candidate[i] if candidate else max(samples_in // stride, 1)
            if samples_in // samples_out != stride:
                break
            chosen.append(samples_out)
            samples_in = math.ceil(samples_in / stride)
        else:
            return tuple(chosen)
    raise ValueError(
        f"no unit_samples reproduce the strides {strides} for {n_samples} input samples"
    )


def trace_resnet(graph: Graph) -> TracedResNet:
    """Recognises the PCLR 1-D ResNet by following ``graph`` from its input.

    Stem conv -> [BN] -> act; then residual units, each identified by its ``Add`` node whose two
    inputs are the strided main-path conv and the skip path ([MaxPool] -> [1x1 conv]) from the
    previous unit's sum; then global average pooling (``embed``) and optional Dense layers. Raises
    ``ValueError`` naming the offending layer for anything else.
    """
    t = _Tracer(graph)
    layers = graph.layers
    inp = layers[graph.input_name]
    t.expect(inp, "InputLayer")
    batch_shape = inp.config.get("batch_input_shape", inp.config.get("batch_shape"))
    if (
        not isinstance(batch_shape, list)
        or len(batch_shape) != 3
        or not all(isinstance(d, int) for d in batch_shape[1:])
    ):
        raise ValueError(
            f"input layer '{inp.name}' has shape {batch_shape}; expected (batch, samples, leads)"
        )
    n_samples, n_leads = batch_shape[1], batch_shape[2]
    t.visit(inp, (n_samples, n_leads))

    stem = t.next_layer(inp)
    t.conv(stem, (n_samples, n_leads), None, ("encoder", "stem_conv"))
    kernel = _single_int(stem, stem.config, "kernel_size")
    if _single_int(stem, stem.config, "strides") != 1:
        raise ValueError(f"layer '{stem.name}' (stem conv) must have stride 1")
    shape = t.shapes[stem.name]
    layer = t.next_layer(stem)
    stem_batch_norm = layer.class_name == "BatchNormalization"
    if stem_batch_norm:
        t.batch_norm(layer, shape, ("encoder", "stem_bn"))
        layer = t.next_layer(layer)
    t.activate(layer, shape)
    main = skip = layer
    strides, filters = [], []

    while True:
        consumers = graph.consumers(main.name)
        if len(consumers) == 1 and consumers[0].class_name == "GlobalAveragePooling1D":
            break
        unit = len(strides)
        path = ("encoder", f"unit_{unit}")
        conv_0 = [
            c
            for c in consumers
            if c.class_name == "Conv1D"
            and [n.class_name for n in graph.consumers(c.name)] == ["BatchNormalization"]
        ]
        if len(conv_0) != 1:
            raise ValueError(
                f"layer '{main.name}' is followed by {[c.name for c in consumers]}; expected a "
                "residual unit (Conv1D -> BatchNormalization) or GlobalAveragePooling1D"
            )
        conv_0 = conv_0[0]
        main_shape = t.shapes[main.name]
        t.conv(conv_0, main_shape, kernel, (*path, "conv_0"))
        if _single_int(conv_0, conv_0.config, "strides") != 1:
            raise ValueError(f"layer '{conv_0.name}' (first conv of unit {unit}) needs stride 1")
        unit_filters = t.shapes[conv_0.name][1]
        bn_0 = t.next_layer(conv_0)
        t.batch_norm(bn_0, t.shapes[conv_0.name], (*path, "bn_0"))
        act_0 = t.next_layer(bn_0)
        t.activate(act_0, t.shapes[bn_0.name])
        last = t.maybe_dropout(act_0, t.shapes[act_0.name])
        conv_1 = t.next_layer(last)
        stride = t.conv(conv_1, t.shapes[last.name], kernel, (*path, "conv_1"))
        if int(conv_1.config["filters"]) != unit_filters:
            raise ValueError(
                f"layer '{conv_1.name}' has {conv_1.config['filters']} filters; the unit's first "
                f"conv '{conv_0.name}' has {unit_filters}"
            )
        add = t.next_layer(conv_1)
        t.expect(add, "Add")
        others = [ref.layer for ref in add.inputs if ref.layer != conv_1.name]
        if len(add.inputs) != 2 or len(others) != 1:
            raise ValueError(f"layer '{add.name}' must add '{conv_1.name}' and one skip path")
        _trace_skip(t, layers[others[0]], skip, add, stride, unit_filters, path)
        t.visit(add, t.shapes[conv_1.name])
        bn_out = [c for c in graph.consumers(add.name) if c.class_name == "BatchNormalization"]
        if len(bn_out) != 1:
            raise ValueError(f"layer '{add.name}' must feed exactly one BatchNormalization")
        bn_out = bn_out[0]
        t.batch_norm(bn_out, t.shapes[add.name], (*path, "bn_out"))
        act = t.next_layer(bn_out)
        t.activate(act, t.shapes[bn_out.name])
        main, skip = t.maybe_dropout(act, t.shapes[act.name]), add
        strides.append(stride)
        filters.append(unit_filters)

    pool = graph.consumers(main.name)[0]
    if (
        pool.config.get("keepdims", False)
        or pool.config.get("data_format", "channels_last") != "channels_last"
    ):
        raise ValueError(f"layer '{pool.name}' must pool over samples without keepdims")
    t.visit(pool, (t.shapes[main.name][1],))
    head_sizes, dense_layers, layer = [], [], pool
    while graph.consumers(layer.name):
        dense = t.next_layer(layer)
        t.expect(dense, "Dense")
        if not dense.config.get("use_bias", True):
            raise ValueError(f"layer '{dense.name}' has no bias; the projection head uses biases")
        t.modules[("head", f"dense_{len(head_sizes)}")] = (dense.name, DENSE)
        head_sizes.append(int(dense.config["units"]))
        t.visit(dense, (head_sizes[-1],))
        dense_layers.append(dense)
        layer = dense
    _check_head_activations(dense_layers)
    if layer.name != graph.output_name:
        raise ValueError(
            f"the model's output is '{graph.output_name}' but the traced graph ends at "
            f"'{layer.name}'"
        )
    untraced = [name for name in layers if name not in t.visited]
    if untraced:
        raise ValueError(f"layers {untraced} are not part of a PCLR ResNet graph")
    _check_recorded_shapes(graph, t.shapes)
    _check_dropout(t)
    epsilon, momentum = t.bn_params if t.bn_params is not None else (1e-3, 0.99)
    config = {
        "n_leads": n_leads,
        "n_samples": n_samples,
        "stem_filters": t.shapes[stem.name][1],
        "unit_samples": _unit_samples(n_samples, strides),
        "unit_filters": tuple(filters),
        "kernel_size": kernel,
        "activation": t.activation,
        "dropout": next(iter(t.dropout_rates.values()), 0.0),
        "stem_batch_norm": stem_batch_norm,
        "head_sizes": tuple(head_sizes),
        "bn_momentum": momentum,
        "bn_epsilon": epsilon,
    }
    return TracedResNet(config=config, modules=t.modules, shapes=t.shapes)


def _trace_skip(
    t: _Tracer, start: Layer, skip: Layer, add: Layer, stride: int, filters: int, path
) -> None:
    """Checks the skip path ``skip -> [MaxPool(stride)] -> [1x1 conv] -> add``."""
    layers = t.graph.layers
    conv = pool = None
    current = start
    if current.class_name == "Conv1D":
        conv, current = current, layers[current.inputs[0].layer]
    if current.class_name == "MaxPooling1D":
        pool, current = current, layers[current.inputs[0].layer]
    if current.name != skip.name:
        raise ValueError(
            f"layer '{current.name}' ({current.class_name}) is on the skip path into "
            f"'{add.name}'; expected MaxPooling1D, a 1x1 Conv1D or the unit input '{skip.name}'"
        )
    samples, width = t.shapes[skip.name]
    if pool is not None:
        pool_size = _single_int(pool, pool.config, "pool_size")
        pool_stride = _single_int(pool, pool.config, "strides", pool_size)
        padding = pool.config.get("padding")
        if (pool_size, pool_stride, padding) != (stride, stride, "same") or stride == 1:
            raise ValueError(
                f"layer '{pool.name}' pools with size {pool_size}, stride {pool_stride}, padding "
                f"{padding!r}; the unit's strided conv needs size = stride = {stride}, 'same' "
                "(and no pooling for stride 1)"
            )
        samples = math.ceil(samples / stride)
        t.visit(pool, (samples, width))
    elif stride != 1:
        raise ValueError(
            f"layer '{add.name}' adds a main path of stride {stride} to a skip path without "
            "MaxPooling1D"
        )
    if conv is not None:
        if width == filters:
            raise ValueError(
                f"layer '{conv.name}' is a skip conv between equal widths ({width}); the PCLR "
                "ResNet uses the identity there"
            )
        t.conv(conv, (samples, width), 1, (*path, "skip_conv"))
        if _single_int(conv, conv.config, "strides") != 1 or int(conv.config["filters"]) != filters:
            raise ValueError(f"layer '{conv.name}' must be a stride-1 conv to {filters} filters")
    elif width != filters:
        raise ValueError(
            f"layer '{add.name}' adds widths {filters} and {width} without a 1x1 skip conv"
        )


def _check_head_activations(dense_layers: list[Layer]) -> None:
    """ReLU between the projection head's Dense layers, none after the last."""
    for i, dense in enumerate(dense_layers):
        wanted = "linear" if i == len(dense_layers) - 1 else "relu"
        found = dense.config.get("activation", "linear")
        if found != wanted:
            raise ValueError(
                f"layer '{dense.name}' has activation {found!r}; the projection head needs "
                f"{wanted!r} there"
            )


def _check_dropout(t: _Tracer) -> None:
    """Dropout after both activations of every unit or nowhere, at one rate."""
    if not t.dropout_rates:
        return
    names = list(t.dropout_rates)
    rate = t.dropout_rates[names[0]]
    for name, other in t.dropout_rates.items():
        if other != rate:
            raise ValueError(f"layer '{name}' drops {other}; '{names[0]}' drops {rate}")
    n_units = sum(1 for path in t.modules if path[-1] == "conv_1")
    if len(names) != 2 * n_units:
        raise ValueError(
            f"dropout layers {names} sit at {len(names)} places; the PCLR ResNet has dropout "
            f"after both activations of all {n_units} units or nowhere"
        )


def _check_recorded_shapes(graph: Graph, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compares the tensor shapes a Keras 3 file records with the traced ones."""
    for layer in graph.layers.values():
        for ref in layer.inputs:
            if ref.shape is not None and tuple(ref.shape[1:]) != shapes[ref.layer]:
                raise ValueError(
                    f"the file records output shape {ref.shape[1:]} for layer '{ref.layer}'; "
                    f"the traced PCLR graph gives {shapes[ref.layer]}"
                )
