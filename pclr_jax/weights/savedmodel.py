"""Reading a Keras SavedModel directory (``model.save(dir)`` in tf.keras 2.x; ml4h's ``PCLR/``,
``PCLR_lead_I/``, ``PCLR_lead_II/``) of the PCLR encoder without TensorFlow.

A SavedModel directory holds ``saved_model.pb`` (the object graph and, up to TensorFlow 2.4, the
Keras metadata), ``keras_metadata.pb`` (the Keras metadata from TensorFlow 2.5 on) and the
checkpoint ``variables/variables.index`` + ``variables/variables.data-*``. The reader

1. takes the Keras model config from the metadata (:mod:`pclr_jax.weights.savedmodel_graph`) and
   recognises the PCLR ResNet in it exactly as the ``.h5`` reader does
   (:func:`~pclr_jax.weights.keras_graph.trace_resnet`: the same refusals of Lambda, unknown
   layers and unsupported options, naming the layer);
2. finds each layer weight's checkpoint key by following the edge names that lead to it
   (``layer_with_weights-0`` then ``kernel``) through the checkpoint's own object graph (the
   ``_CHECKPOINTABLE_OBJECT_GRAPH`` entry), and checks its dtype and shape against the graph;
3. reads the bytes from the data file, CRC32C checked (:mod:`pclr_jax.weights.tensor_bundle`).

Variables under the model's ``optimizer`` and ``keras_api`` edges (optimizer slots, metric
totals of a compiled model) are training state and skipped; any other entry that belongs to no
layer of the graph is refused. Nothing is executed: only protobuf messages, JSON and raw arrays
are parsed. The default output is the file's own (``'final'``; :mod:`pclr_jax.weights.
output_layer`), as for any third-party Keras file.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.weights.keras_graph import Graph, TracedResNet, parse_model_config, trace_resnet
from pclr_jax.weights.keras_weights import (
    WEIGHT_MAP,
    KerasModel,
    assemble_variables,
    check_no_stray_layers,
    expected_shapes,
    module_shapes,
)
from pclr_jax.weights.savedmodel_graph import (
    LayerVariable,
    default_checkpoint_key,
    read_savedmodel_graph,
)
from pclr_jax.weights.tensor_bundle import (
    OBJECT_GRAPH_KEY,
    BundleEntry,
    BundleError,
    BundleIndex,
    read_array,
    read_index,
    read_object_graph,
)

VARIABLES_PREFIX = os.path.join("variables", "variables")
# Edges from the model whose variables are training state, not weights of the encoder.
TRAINING_STATE_EDGES = ("optimizer", "keras_api")
# TensorFlow DataType numbers of the float types a weight may be stored in (float32, float64,
# float16); the weights are read as float32, as from a .h5 file.
FLOAT_DTYPES = {1: "float32", 2: "float64", 19: "float16"}
_VALUE_ATTRIBUTE = "VARIABLE_VALUE"


@dataclasses.dataclass(frozen=True)
class StoredWeight:
    """One weight of the traced graph and its checkpoint entry."""

    layer: str
    weight: str
    entry: BundleEntry


@dataclasses.dataclass(frozen=True)
class SavedModelLayout:
    """Everything known about a Keras SavedModel before its weights are read.

    ``weights`` lists every weight of the traced PCLR graph with its checkpoint entry (dtype and
    shape checked against the graph); ``training_state`` the index keys skipped as optimizer or
    metric state.
    """

    graph: Graph
    traced: TracedResNet
    config: EncoderConfig
    index: BundleIndex
    weights: tuple[StoredWeight, ...]
    training_state: tuple[str, ...]


def object_graph_key(object_graph, path: tuple[str, ...]) -> str:
    """The checkpoint key of the variable reached from the root of ``object_graph`` (a
    ``TrackableObjectGraph``) by the edge names ``path``."""
    node = object_graph.nodes[0]
    for name in path:
        edges = [edge for edge in node.children if edge.local_name == name]
        if not edges:
            raise ValueError(
                f"the checkpoint's object graph has no '{'/'.join(path)}' (no edge '{name}')"
            )
        node = object_graph.nodes[edges[0].node_id]
    for attribute in node.attributes:
        if attribute.name == _VALUE_ATTRIBUTE:
            return attribute.checkpoint_key
    raise ValueError(f"the checkpoint's object graph stores no value for '{'/'.join(path)}'")


def _check_entry(variable: LayerVariable, entry: BundleEntry, shape: tuple) -> None:
    where = f"layer '{variable.layer}' weight '{variable.weight}' ('{entry.key}')"
    if entry.shape != shape:
        raise ValueError(f"{where} has shape {entry.shape}; the graph implies {shape}")
    if entry.shape != variable.shape or entry.dtype != variable.dtype:
        raise ValueError(
            f"{where}: saved_model.pb records dtype {variable.dtype} shape {variable.shape}, "
            f"the checkpoint dtype {entry.dtype} shape {entry.shape}"
        )
    if entry.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{where} is stored as TensorFlow dtype {entry.dtype}, not a float")


def plan_savedmodel(
    directory: str | os.PathLike, follow_object_graph: bool = True
) -> SavedModelLayout:
    """The :class:`SavedModelLayout` of the Keras SavedModel ``directory``; reads no weight.

    With ``follow_object_graph`` (the default), each weight's checkpoint key is looked up in the
    checkpoint's object graph, which is stored in the data file; without it, the key is the one
    TensorFlow gives by default (:func:`~pclr_jax.weights.savedmodel_graph.
    default_checkpoint_key`), so that a SavedModel's structure can be checked from
    ``saved_model.pb`` and ``variables.index`` alone. Raises ``ValueError`` naming the layer
    or entry for anything that is not the PCLR ResNet or does not match its graph.
    """
    directory = os.fspath(directory)
    saved = read_savedmodel_graph(directory)
    graph = parse_model_config(saved.model_config)
    traced = trace_resnet(graph)
    config = EncoderConfig(**traced.config)
    index = read_index(os.path.join(directory, VARIABLES_PREFIX))
    object_graph = read_object_graph(index) if follow_object_graph else None
    by_layer: dict[str, dict[str, LayerVariable]] = {}
    for variable in saved.variables:
        by_layer.setdefault(variable.layer, {})[variable.weight] = variable
    check_no_stray_layers(by_layer, traced.modules)
    expected = expected_shapes(config)
    weights = []
    for path, (layer, kind) in traced.modules.items():
        saved_weights = by_layer.get(layer, {})
        if set(saved_weights) != set(WEIGHT_MAP[kind]):
            raise ValueError(
                f"layer '{layer}' has weights {sorted(saved_weights)}; expected "
                f"{sorted(WEIGHT_MAP[kind])}"
            )
        shapes = module_shapes(expected, path, kind)
        for name, variable in saved_weights.items():
            if object_graph is None:
                key = default_checkpoint_key(variable.path)
            else:
                key = object_graph_key(object_graph, variable.path)
            if key not in index.entries:
                raise ValueError(
                    f"layer '{layer}' weight '{name}' has no entry '{key}' in the checkpoint"
                )
            _check_entry(variable, index.entries[key], shapes[name])
            weights.append(StoredWeight(layer, name, index.entries[key]))
    used = {weight.entry.key for weight in weights} | {OBJECT_GRAPH_KEY}
    training_state = []
    for key in index.entries:
        if key in used:
            continue
        if key.split("/")[0] not in TRAINING_STATE_EDGES:
            raise ValueError(f"checkpoint entry '{key}' belongs to no layer of the graph")
        training_state.append(key)
    return SavedModelLayout(
        graph=graph,
        traced=traced,
        config=config,
        index=index,
        weights=tuple(weights),
        training_state=tuple(training_state),
    )


def read_savedmodel(directory: str | os.PathLike) -> KerasModel:
    """Reads a PCLR encoder (with or without projection head) from a Keras SavedModel directory.

    Raises ``ValueError`` naming the layer when the graph is not the PCLR ResNet, a layer type or
    option is unsupported, or a weight is missing or has the wrong shape; and naming the layer,
    weight and checkpoint key when the checkpoint is missing, truncated or fails its CRC32C check.
    """
    layout = plan_savedmodel(directory)
    by_layer: dict[str, list[StoredWeight]] = {}
    for weight in layout.weights:
        by_layer.setdefault(weight.layer, []).append(weight)

    def layer_weights(layer: str) -> dict[str, np.ndarray]:
        arrays = {}
        for weight in by_layer[layer]:
            try:
                arrays[weight.weight] = read_array(layout.index, weight.entry).astype(np.float32)
            except BundleError as error:
                raise BundleError(f"layer '{layer}' weight '{weight.weight}': {error}") from error
        return arrays

    variables = assemble_variables(layer_weights, layout.traced.modules, layout.config)
    return KerasModel(
        config=layout.config,
        variables=variables,
        output_layer=layout.graph.output_name,
        input_name=layout.graph.input_name,
        default_output=None,
    )
