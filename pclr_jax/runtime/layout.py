"""How ECGs lie in device memory: lane-dense rows instead of ``(samples, leads)``.

TPUs tile the two minor dimensions of an array in (8, 128) blocks (16-bit types: (16, 128)), so a
``(..., 4096, 12)`` array takes ``128 / 12`` = 10.7 times its size in HBM, and every copy moves
the padding too. GPUs do not pad, but strided 12-wide rows make poor memory transactions. The
feeds therefore store and move every ECG as ``lane_dense_shape(samples, leads)``: ``(samples x
leads / 128, 128)`` when 128 divides the number of values (any multiple of 32 samples with 12
leads: 256, 1,024, 4,096), else flat ``(samples x leads,)``. It is the same bytes in the same
order (a reshape, no copy on the host); the training step and the embedding function reshape to
``(samples, leads)`` inside the compiled program, where XLA fuses the reshape into the cast.
(The stem convolution could instead read the lane-dense rows as an im2col matrix product, a
16 x 12 = 192 contraction; not done: the convolution formulations belong to
``pclr_jax/model/conv.py``, and on CPUs im2col measured 2-3 times slower than ``lax.conv``.)
"""

from __future__ import annotations

import numpy as np

LANES = 128


def lane_dense_shape(samples: int, leads: int) -> tuple[int, ...]:
    """The per-ECG shape on the devices: ``(samples * leads // 128, 128)``, or
    ``(samples * leads,)`` when 128 does not divide it."""
    values = samples * leads
    return (values // LANES, LANES) if values % LANES == 0 else (values,)


def to_lane_dense(ecgs: np.ndarray) -> np.ndarray:
    """``(n, samples, leads)`` -> ``(n, *lane_dense_shape(samples, leads))`` (a view when
    ``ecgs`` is contiguous)."""
    n, samples, leads = ecgs.shape
    return ecgs.reshape(n, *lane_dense_shape(samples, leads))
