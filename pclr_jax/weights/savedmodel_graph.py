"""What a Keras SavedModel says about its model, read from ``saved_model.pb`` (and
``keras_metadata.pb``) without TensorFlow: the Keras model config and which object of the
SavedModel's object graph holds each layer's variables.

Where Keras puts it:

* the ``SavedObjectGraph`` of ``saved_model.pb`` (``meta_graphs[0].object_graph_def``) has the
  model at node 0; its children ``layer-N`` (every layer, in ``model.layers`` order) and
  ``layer_with_weights-N`` (the layers that have weights) lead to one node per Keras layer, whose
  children ``kernel``, ``gamma``, ... are the layer's variables (nodes of kind ``variable``,
  with dtype and shape);
* each Keras object's JSON metadata (``name``, ``class_name``, and for the model its
  ``model_config``) is, for tf.keras 2.4 (ml4h's released files), the ``metadata`` string of the
  node's ``SavedUserObject``; from TensorFlow 2.5 on it moved to ``keras_metadata.pb`` (a
  ``SavedMetadata`` whose nodes name their object-graph node by ``node_id``).

Only protobuf messages and JSON are parsed; the graph's functions are never looked at, let
alone run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from google.protobuf.message import DecodeError

from pclr_jax.weights import tf_protos

SAVED_MODEL = "saved_model.pb"
KERAS_METADATA = "keras_metadata.pb"
# The root's edges to the model's layers (tf.keras Functional._trackable_children).
_LAYER_EDGE = re.compile(r"layer(_with_weights)?-\d+")
_MODEL_IDENTIFIERS = ("_tf_keras_network", "_tf_keras_model", "_tf_keras_sequential")


@dataclasses.dataclass(frozen=True)
class LayerVariable:
    """One variable of a Keras layer as the SavedModel's object graph records it.

    ``path`` is the chain of object-graph edge names from the model to the variable, e.g.
    ``('layer_with_weights-0', 'kernel')``: the first edge from the model to the layer, as
    TensorFlow's breadth-first checkpoint naming takes it. ``dtype`` is TensorFlow's
    ``DataType`` number (1: float32) and ``shape`` the variable's shape.
    """

    layer: str
    weight: str
    path: tuple[str, ...]
    dtype: int
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SavedModelGraph:
    """A Keras SavedModel's model config (a ``{"class_name", "config"}`` dict, as in a ``.h5``
    file's ``model_config``) and the variables of its layers, in layer order."""

    model_config: dict
    variables: tuple[LayerVariable, ...]


def escape_edge(name: str) -> str:
    """An object-graph edge name as it appears in a checkpoint key (``.`` -> ``..``,
    ``/`` -> ``.S``; TensorFlow's ``trackable_utils.escape_local_name``)."""
    return name.replace(".", "..").replace("/", ".S")


def default_checkpoint_key(path: tuple[str, ...]) -> str:
    """The checkpoint key TensorFlow gives the variable at ``path``
    (``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``)."""
    return "/".join(escape_edge(name) for name in path) + "/.ATTRIBUTES/VARIABLE_VALUE"


def _keras_metadata(directory: str, object_graph) -> dict[int, tuple[str, str]]:
    """Object-graph node id -> (Keras identifier, JSON metadata), from ``keras_metadata.pb``
    when present, else from the nodes' ``SavedUserObject``s."""
    found = {}
    for node_id, node in enumerate(object_graph.nodes):
        if node.HasField("user_object") and node.user_object.metadata:
            found[node_id] = (node.user_object.identifier, node.user_object.metadata)
    path = os.path.join(directory, KERAS_METADATA)
    if os.path.exists(path):
        with open(path, "rb") as f:
            saved = tf_protos.KerasSavedMetadata.FromString(f.read())
        for node in saved.nodes:
            found[node.node_id] = (node.identifier, node.metadata)
    return found


def _json(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the Keras metadata of {what} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"the Keras metadata of {what} is not a JSON object")
    return value


def read_savedmodel_graph(directory: str | os.PathLike) -> SavedModelGraph:
    """Reads the model config and the layers' variables of the Keras SavedModel ``directory``.

    Raises ``ValueError`` when ``saved_model.pb`` is missing or unreadable, or the SavedModel
    was not written by Keras (no Keras metadata for the model or one of its layers).
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, SAVED_MODEL)
    try:
        with open(path, "rb") as f:
            saved_model = tf_protos.SavedModel.FromString(f.read())
    except FileNotFoundError as error:
        raise ValueError(f"{directory} has no {SAVED_MODEL}; not a SavedModel") from error
    except DecodeError as error:
        raise ValueError(f"{path} is not a SavedModel protobuf: {error}") from error
    if len(saved_model.meta_graphs) != 1:
        raise ValueError(f"{path} holds {len(saved_model.meta_graphs)} meta graphs; expected 1")
    object_graph = saved_model.meta_graphs[0].object_graph_def
    if not object_graph.nodes:
        raise ValueError(f"{path} has no object graph (a TensorFlow 1 SavedModel?)")
    metadata = _keras_metadata(directory, object_graph)
    if 0 not in metadata or metadata[0][0] not in _MODEL_IDENTIFIERS:
        raise ValueError(f"{directory} was not saved by Keras: its root has no Keras metadata")
    root = _json(metadata[0][1], "the model")
    model_config = root.get("model_config") or {
        "class_name": root.get("class_name"),
        "config": root.get("config"),
    }
    variables = []
    seen: set[int] = set()
    for edge in object_graph.nodes[0].children:
        if not _LAYER_EDGE.fullmatch(edge.local_name) or edge.node_id in seen:
            continue
        seen.add(edge.node_id)
        if edge.node_id not in metadata:
            raise ValueError(f"{directory}: '{edge.local_name}' has no Keras metadata")
        layer = _json(metadata[edge.node_id][1], f"'{edge.local_name}'").get("name")
        for child in object_graph.nodes[edge.node_id].children:
            node = object_graph.nodes[child.node_id]
            if node.HasField("variable"):
                variables.append(
                    LayerVariable(
                        layer=layer,
                        weight=child.local_name,
                        path=(edge.local_name, child.local_name),
                        dtype=node.variable.dtype,
                        shape=tuple(int(d.size) for d in node.variable.shape.dim),
                    )
                )
    return SavedModelGraph(model_config=model_config, variables=tuple(variables))
