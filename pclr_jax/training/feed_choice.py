"""Which feed a run uses when ``loader.mode = 'auto'``, and how many worker processes it reads
with when ``loader.worker_count = -1``: a pure function of what a run knows at start-up.

The rule (:func:`choose_feed`):

1. Augmentations run on the host (NumPy): the host feed.
2. On an accelerator (``gpu``, ``tpu``) that reports its memory, a split whose share per device
   (``split_bytes / devices``, float16 as stored) takes at most :data:`DEVICE_RESIDENT_FRACTION`
   of a device's memory: the device-resident feed (``pclr_jax.data.device_resident``; replicated
   on every device when the whole split takes at most a quarter of one). The host then reads
   nothing per step.
3. Otherwise the host feed (grain). On the CPU backend it reads in the training process with its
   read threads (``worker_count = 0``): the "devices" are the same cores, and on 2 cores threads
   beat worker processes (measured below). On an accelerator, one grain worker process per core
   beyond :data:`RESERVED_CORES` (the training loop's Python thread and the JAX runtime need
   theirs): a single process decodes tfds records under the GIL, about one core's worth.

Why (measured per CPU-second on a loaded 2-core Zen 4, 4,096 x 12 float16 ECGs, 128 pairs per
batch, ``docs/scaling.md``, "The pair loader, measured"): 2 read threads with float16 views
deliver 4,814 ECG per CPU-s from raw ArrayRecord records and 1,981 from tfds-prepared ones (what
``pclr prepare`` writes); one worker process 1,480 and 1,078; idle, 2 threads read about 6k ECG/s
in all (``docs/data.md``). One H100 in bf16 is projected to eat 15-33k ECG/s: 8-17 cores of tfds
reading per GPU, more than a process's GIL allows, hence worker processes there, and the
device-resident feed wherever the split fits.
"""

from __future__ import annotations

import dataclasses
import os

ACCELERATORS = ("gpu", "tpu")
DEVICE_RESIDENT_FRACTION = 0.5  # of one device's memory, for the split's share per device
RESERVED_CORES = 2  # the training loop's thread and the JAX runtime


@dataclasses.dataclass(frozen=True)
class FeedChoice:
    """``mode`` (``'host'`` or ``'device_resident'``), the host feed's ``worker_count``, and why."""

    mode: str
    worker_count: int
    reason: str


def choose_feed(
    backend: str,
    split_bytes: int,
    devices: int,
    device_bytes: int | None,
    augmented: bool,
    host_cores: int,
) -> FeedChoice:
    """The rule of the module docstring.

    Args:
        backend: ``jax.default_backend()`` (``'cpu'``, ``'gpu'``, ``'tpu'``).
        split_bytes: the training split's ECGs in float16, bytes.
        devices: devices in the mesh.
        device_bytes: the smallest device memory (``memory_stats()['bytes_limit']``), or None.
        augmented: whether any augmentation is switched on.
        host_cores: cores this process may use (``len(os.sched_getaffinity(0))``).
    """
    workers = max(0, host_cores - RESERVED_CORES) if backend in ACCELERATORS else 0
    if augmented:
        return FeedChoice("host", workers, "augmentations run on the host")
    if backend in ACCELERATORS and device_bytes is not None:
        share = split_bytes / devices
        if share <= DEVICE_RESIDENT_FRACTION * device_bytes:
            return FeedChoice(
                "device_resident",
                0,
                f"the split's {share / 1e9:.2f} GB per device fit in {device_bytes / 1e9:.1f} GB",
            )
        reason = f"the split's {share / 1e9:.2f} GB per device exceed half of a device"
    elif backend in ACCELERATORS:
        reason = "the devices do not report their memory"
    else:
        reason = f"the {backend} backend computes on the host's cores"
    return FeedChoice("host", workers, reason)


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a Slurm task's cores)."""
    return len(os.sched_getaffinity(0))
