"""Reading a LevelDB-format table (SSTable), the format of a TensorFlow checkpoint's
``variables.index``, in pure Python.

Layout (TensorFlow's ``tensorflow/core/lib/io/format.h`` keeps LevelDB's): data blocks, a
metaindex block, an index block, then a 48-byte footer holding the metaindex and index block
handles (``varint64 offset, varint64 size`` each, zero-padded to 40 bytes) and the magic number
``0xdb4775248b80fb57`` (little-endian). Each block is followed by a 5-byte trailer: its
compression type (0: none, 1: Snappy) and the masked CRC32C of block and type byte. A block holds
prefix-compressed entries (``varint32 shared, varint32 unshared, varint32 value_length``, the
key's unshared bytes, the value) followed by its restart offsets (``uint32`` each) and their
count (``uint32``). The index block maps a separator key to the handle of each data block.

TensorFlow writes bundle indexes uncompressed; a Snappy-compressed block is refused by name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from pclr_jax.weights.crc32c import masked_crc32c

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_COMPRESSION = {0: "none", 1: "snappy"}


class TableError(ValueError):
    """The table is malformed, truncated, compressed or fails a checksum."""


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """The unsigned LEB128 integer at ``data[pos:]`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TableError(f"truncated or overlong varint in {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _block_handle(data: bytes, pos: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(data, pos, what)
    size, pos = _varint(data, pos, what)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], what: str) -> bytes:
    """The contents of the block at ``handle``, its trailer checked."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:
        raise TableError(f"{what} at bytes {offset}-{end} runs past the end of the table")
    contents = table[offset:end]
    kind = table[end]
    (stored,) = struct.unpack_from("<I", table, end + 1)
    if masked_crc32c(table[offset : end + 1]) != stored:
        raise TableError(f"{what} at bytes {offset}-{end} fails its CRC32C check")
    if kind != 0:
        name = _COMPRESSION.get(kind, f"unknown type {kind}")
        raise TableError(f"{what} is {name}-compressed; only uncompressed tables are read")
    return contents


def _block_entries(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every entry of a block, in order, keys rebuilt from their prefixes."""
    if len(block) < 4:
        raise TableError(f"{what} is too short to hold its restart count")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (n_restarts + 1)
    if n_restarts < 1 or end < 0:
        raise TableError(f"{what} has an impossible restart count {n_restarts}")
    restarts = set(struct.unpack_from(f"<{n_restarts}I", block, end))
    pos, key = 0, b""
    while pos < end:
        entry_start = pos
        shared, pos = _varint(block, pos, what)
        unshared, pos = _varint(block, pos, what)
        value_length, pos = _varint(block, pos, what)
        if shared > len(key) or (entry_start in restarts and shared):
            raise TableError(f"{what} entry at byte {entry_start} shares a missing key prefix")
        if pos + unshared + value_length > end:
            raise TableError(f"{what} entry at byte {entry_start} runs past the block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


def read_table(table: bytes, what: str = "table") -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an SSTable held in ``table``, in key order.

    Raises :class:`TableError` (a ``ValueError``) naming ``what`` for a bad magic number, a
    truncated or corrupt block, a Snappy-compressed block or keys out of order.
    """
    if len(table) < FOOTER_SIZE:
        raise TableError(f"{what} has {len(table)} bytes, fewer than a table footer")
    footer = table[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != MAGIC:
        raise TableError(f"{what} does not end in the table magic number (truncated?)")
    _, pos = _block_handle(footer, 0, f"{what} footer")
    index_handle, _ = _block_handle(footer, pos, f"{what} footer")
    index = _read_block(table, index_handle, f"{what} index block")
    previous = None
    for _, handle_bytes in _block_entries(index, f"{what} index block"):
        handle, _ = _block_handle(handle_bytes, 0, f"{what} index block")
        block = _read_block(table, handle, f"{what} data block")
        for key, value in _block_entries(block, f"{what} data block at byte {handle[0]}"):
            if previous is not None and key <= previous:
                raise TableError(f"{what} key {key!r} is not after {previous!r}")
            previous = key
            yield key, value
