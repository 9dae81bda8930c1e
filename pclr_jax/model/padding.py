"""TensorFlow's 'SAME' padding rule, shared by every convolution formulation and the pools."""

from __future__ import annotations


def same_padding(n: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding ``(left, right)`` of a window ``k`` with ``stride`` over ``n``
    samples: ``out = ceil(n / stride)``, ``pad = max((out - 1) * stride + k - n, 0)``, ``pad // 2``
    on the left, the rest on the right."""
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2
