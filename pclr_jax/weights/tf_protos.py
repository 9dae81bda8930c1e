"""The few TensorFlow and Keras protobuf messages a SavedModel reader needs, without TensorFlow.

The messages are declared here as a ``FileDescriptorProto`` and built by the ``protobuf`` runtime
(no generated code, no ``protoc``). Each keeps only the fields pclr-jax reads, with TensorFlow's
field numbers; the parser keeps every other field as an unknown field that nothing reads. Enums
(``DataType``, ``Endianness``) are declared as ``int32``, which has the same wire format. The
sources, for checking the numbers:

* ``tensorflow/core/protobuf/saved_model.proto``: ``SavedModel``;
* ``tensorflow/core/protobuf/meta_graph.proto``: ``MetaGraphDef.object_graph_def = 7``;
* ``tensorflow/core/protobuf/saved_object_graph.proto``: ``SavedObjectGraph``, ``SavedObject``,
  ``SavedUserObject``, ``SavedVariable``;
* ``tensorflow/core/protobuf/trackable_object_graph.proto``: ``TrackableObjectGraph`` (the
  ``_CHECKPOINTABLE_OBJECT_GRAPH`` entry of a checkpoint);
* ``tensorflow/core/protobuf/tensor_bundle.proto``: ``BundleHeaderProto``, ``BundleEntryProto``;
* ``tensorflow/core/framework/tensor_shape.proto``, ``versions.proto``;
* tf-keras ``tf_keras/protobuf/saved_metadata.proto``: ``SavedMetadata`` (``keras_metadata.pb``).

``tensorboard.compat.proto`` ships some of these (``meta_graph_pb2``,
``saved_object_graph_pb2``) but not ``SavedModel``, the bundle messages or Keras'
``SavedMetadata``, and would bring grpcio, werkzeug and a binary data server along.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "pclr_jax.tf"
_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "string": _F.TYPE_STRING,
    "fixed32": _F.TYPE_FIXED32,
}

# message name -> [(field name, number, type or message name, repeated)]
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "VersionDef": [("min_consumer", 2, "int32", False)],
    "TensorShapeDim": [("size", 1, "int64", False)],
    "TensorShapeProto": [("dim", 2, "TensorShapeDim", True)],
    "SavedModel": [("meta_graphs", 2, "MetaGraphDef", True)],
    "MetaGraphDef": [("object_graph_def", 7, "SavedObjectGraph", False)],
    "SavedObjectGraph": [("nodes", 1, "SavedObject", True)],
    "ObjectReference": [("node_id", 1, "int32", False), ("local_name", 2, "string", False)],
    "SavedObject": [
        ("children", 1, "ObjectReference", True),
        ("user_object", 4, "SavedUserObject", False),
        ("variable", 7, "SavedVariable", False),
    ],
    "SavedUserObject": [("identifier", 1, "string", False), ("metadata", 3, "string", False)],
    "SavedVariable": [("dtype", 1, "int32", False), ("shape", 2, "TensorShapeProto", False)],
    "SerializedTensor": [("name", 1, "string", False), ("checkpoint_key", 3, "string", False)],
    "TrackableObject": [
        ("children", 1, "ObjectReference", True),
        ("attributes", 2, "SerializedTensor", True),
    ],
    "TrackableObjectGraph": [("nodes", 1, "TrackableObject", True)],
    "BundleHeaderProto": [
        ("num_shards", 1, "int32", False),
        ("endianness", 2, "int32", False),
        ("version", 3, "VersionDef", False),
    ],
    "TensorSliceProto": [],  # only counted: a sliced variable is refused
    "BundleEntryProto": [
        ("dtype", 1, "int32", False),
        ("shape", 2, "TensorShapeProto", False),
        ("shard_id", 3, "int32", False),
        ("offset", 4, "int64", False),
        ("size", 5, "int64", False),
        ("crc32c", 6, "fixed32", False),
        ("slices", 7, "TensorSliceProto", True),
    ],
    "KerasSavedObject": [
        ("node_id", 2, "int32", False),
        ("identifier", 4, "string", False),
        ("metadata", 5, "string", False),
    ],
    "KerasSavedMetadata": [("nodes", 1, "KerasSavedObject", True)],
}


def _build() -> dict[str, type]:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="pclr_jax/tf_subset.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if kind in _TYPES:
                field.type = _TYPES[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
SavedModel = _CLASSES["SavedModel"]
TrackableObjectGraph = _CLASSES["TrackableObjectGraph"]
BundleHeaderProto = _CLASSES["BundleHeaderProto"]
BundleEntryProto = _CLASSES["BundleEntryProto"]
KerasSavedMetadata = _CLASSES["KerasSavedMetadata"]
