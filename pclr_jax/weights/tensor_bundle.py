"""Reading a TensorFlow checkpoint (a *tensor bundle*, ``PREFIX.index`` + ``PREFIX.data-*``)
without TensorFlow.

``PREFIX.index`` is an SSTable (:mod:`pclr_jax.weights.sstable`) whose key ``""`` holds a
``BundleHeaderProto`` (number of data shards, endianness, format version) and every other key a
``BundleEntryProto``: the tensor's dtype, shape, data shard, byte offset and size, and the masked
CRC32C of its bytes. ``PREFIX.data-0000S-of-0000N`` holds the raw bytes: little-endian,
C-ordered for numeric tensors; for string tensors (e.g. ``_CHECKPOINTABLE_OBJECT_GRAPH``, the
serialised ``TrackableObjectGraph``) the ``varint64`` lengths, a masked CRC32C of the lengths,
then the bytes of each string (``tensorflow/core/util/tensor_bundle/tensor_bundle.cc``).

Every byte read is checked against the entry's checksum. Partitioned (sliced) variables and
big-endian bundles are refused.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from pclr_jax.weights import tf_protos
from pclr_jax.weights.crc32c import crc32c, mask
from pclr_jax.weights.sstable import read_table

HEADER_KEY = ""
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
DT_STRING = 7
# TensorFlow DataType number -> NumPy dtype (little-endian), for the numeric types.
NUMPY_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
# The tensor bundle format version this reader implements (TensorFlow's kTensorBundleVersion).
BUNDLE_VERSION = 1


class BundleError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or in a form this reader refuses."""


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    """Where one tensor is stored: ``size`` bytes at ``offset`` of data shard ``shard_id``.

    ``dtype`` is TensorFlow's ``DataType`` number (1: float32, 7: string, ...), ``shape`` the
    tensor's shape and ``crc32c`` the masked CRC32C of its bytes.
    """

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """The NumPy dtype of a numeric tensor, ``None`` for strings and unknown types."""
        return NUMPY_DTYPES.get(self.dtype)


@dataclasses.dataclass(frozen=True)
class BundleIndex:
    """The parsed ``PREFIX.index``: ``entries`` by key (the header excluded), in key order."""

    prefix: str
    num_shards: int
    entries: dict[str, BundleEntry]

    def data_path(self, shard_id: int) -> str:
        """The data file of shard ``shard_id`` (``PREFIX.data-00000-of-00001``)."""
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"


def read_index(prefix: str | os.PathLike) -> BundleIndex:
    """Parses ``PREFIX.index``; raises :class:`BundleError` if it is missing or malformed."""
    prefix = os.fspath(prefix)
    path = prefix + ".index"
    try:
        with open(path, "rb") as f:
            table = f.read()
    except FileNotFoundError as error:
        raise BundleError(f"checkpoint index {path} is missing") from error
    header = None
    entries: dict[str, BundleEntry] = {}
    for raw_key, value in read_table(table, path):
        key = raw_key.decode("utf-8")
        if key == HEADER_KEY:
            header = tf_protos.BundleHeaderProto.FromString(value)
            continue
        proto = tf_protos.BundleEntryProto.FromString(value)
        if proto.slices:
            raise BundleError(f"{path}: '{key}' is a partitioned variable; not supported")
        entries[key] = BundleEntry(
            key=key,
            dtype=proto.dtype,
            shape=tuple(int(d.size) for d in proto.shape.dim),
            shard_id=proto.shard_id,
            offset=proto.offset,
            size=proto.size,
            crc32c=proto.crc32c,
        )
    if header is None:
        raise BundleError(f"{path} has no header entry; not a TensorFlow checkpoint index")
    if header.endianness != 0:
        raise BundleError(f"{path} was written on a big-endian machine; not supported")
    if header.version.min_consumer > BUNDLE_VERSION:
        raise BundleError(
            f"{path} needs tensor bundle format version {header.version.min_consumer}; this "
            f"reader implements version {BUNDLE_VERSION}"
        )
    for entry in entries.values():
        if not 0 <= entry.shard_id < header.num_shards:
            raise BundleError(
                f"{path}: '{entry.key}' is in shard {entry.shard_id} of {header.num_shards}"
            )
    return BundleIndex(prefix=prefix, num_shards=header.num_shards, entries=entries)


def _read_bytes(index: BundleIndex, entry: BundleEntry) -> bytes:
    path = index.data_path(entry.shard_id)
    try:
        with open(path, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
    except FileNotFoundError as error:
        raise BundleError(f"checkpoint data file {path} is missing") from error
    if len(data) != entry.size:
        raise BundleError(
            f"'{entry.key}' needs bytes {entry.offset}-{entry.offset + entry.size} of {path}, "
            f"which ends at byte {os.path.getsize(path)} (truncated file?)"
        )
    return data


def _checksum_error(entry: BundleEntry, path: str) -> BundleError:
    return BundleError(
        f"'{entry.key}' fails its CRC32C check: bytes {entry.offset}-{entry.offset + entry.size} "
        f"of {path} are corrupt"
    )


def read_array(index: BundleIndex, entry: BundleEntry) -> np.ndarray:
    """The numeric tensor of ``entry`` as a NumPy array (native byte order), CRC32C checked."""
    dtype = entry.numpy_dtype
    if dtype is None:
        raise BundleError(f"'{entry.key}' has TensorFlow dtype {entry.dtype}; not numeric")
    count = int(np.prod(entry.shape, dtype=np.int64))
    if entry.size != count * dtype.itemsize:
        raise BundleError(
            f"'{entry.key}' holds {entry.size} bytes; shape {entry.shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    data = _read_bytes(index, entry)
    if mask(crc32c(data)) != entry.crc32c:
        raise _checksum_error(entry, index.data_path(entry.shard_id))
    return np.frombuffer(data, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))


def _varint(data: bytes, pos: int, entry: BundleEntry) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift <= 63:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise BundleError(f"'{entry.key}' has a malformed string length")


def read_strings(index: BundleIndex, entry: BundleEntry) -> list[bytes]:
    """The elements of the string tensor of ``entry``, in C order, CRC32C checked.

    The stored checksum covers each length as a little-endian ``uint32`` (``uint64`` past
    2**32 - 1), the masked length checksum, then the string bytes.
    """
    if entry.dtype != DT_STRING:
        raise BundleError(f"'{entry.key}' has TensorFlow dtype {entry.dtype}; not a string")
    data = _read_bytes(index, entry)
    count = int(np.prod(entry.shape, dtype=np.int64))
    lengths, pos = [], 0
    for _ in range(count):
        length, pos = _varint(data, pos, entry)
        lengths.append(length)
    packed = (
        b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)
        + data[pos : pos + 4]
    )
    pos += 4
    if pos + sum(lengths) != len(data):
        raise BundleError(f"'{entry.key}' lengths do not add up to its {entry.size} bytes")
    if mask(crc32c(packed + data[pos:])) != entry.crc32c:
        raise _checksum_error(entry, index.data_path(entry.shard_id))
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    return strings


def read_object_graph(index: BundleIndex):
    """The checkpoint's ``TrackableObjectGraph`` (the ``_CHECKPOINTABLE_OBJECT_GRAPH`` entry)."""
    entry = index.entries.get(OBJECT_GRAPH_KEY)
    if entry is None:
        raise BundleError(f"{index.prefix}.index has no {OBJECT_GRAPH_KEY} entry")
    (serialized,) = read_strings(index, entry)
    return tf_protos.TrackableObjectGraph.FromString(serialized)
