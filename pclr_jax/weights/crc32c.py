"""CRC32C (Castagnoli) as TensorFlow and LevelDB store it: *masked*.

The checksum itself comes from ``google-crc32c`` (hardware accelerated where it can be, with a
pure-Python fallback). TensorFlow stores ``mask(crc) = rotate_right(crc, 15) + 0xa282ead8``
(mod 2**32) so that a checksum of data holding checksums stays well distributed
(``tensorflow/core/lib/hash/crc32c.h``).
"""

from __future__ import annotations

import google_crc32c

MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes | memoryview) -> int:
    """The plain CRC32C of ``data`` (``crc32c(b'123456789') == 0xE3069283``)."""
    return google_crc32c.value(bytes(data))


def mask(crc: int) -> int:
    """TensorFlow's masking of a CRC32C value."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """``mask(crc32c(data))``: the value a TensorFlow checkpoint or table stores."""
    return mask(crc32c(data))
