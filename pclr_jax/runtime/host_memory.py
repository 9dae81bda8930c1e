"""Keeping the host memory that XLA:CPU frees after each step, so the next step does not fault it
in again (glibc's ``malloc``, set with ``mallopt`` at process start).

XLA:CPU allocates a program's temporaries as one block per execution (844 MB for the released
model's training step at 32 pairs) and frees it when the step ends. glibc serves a block that
large with ``mmap`` (from a thread's arena, whatever ``M_MMAP_MAX`` says) and gives it back with
``munmap``, so every step faults about 200,000 fresh pages in: 0.4-0.5 s of system time per
step on a 2-core Intel Xeon VM (family 6 model 207, AVX-512), and about 2 s where the machine
has free-page reporting and another process ran in between (``docs/speed_cpu.md``). With
``PCLR_KEEP_HOST_MEMORY=1``, :func:`keep_freed_memory` makes every thread allocate from the main
arena (``M_ARENA_MAX`` 1), without ``mmap`` (``M_MMAP_MAX`` 0), and never trims its top
(``M_TRIM_THRESHOLD`` -1): the block is reused (no faults, 0.04-0.13 s of system time per
step), but the process never returns memory, and when another allocation lands inside the freed
block the next one is placed beyond it: the resident memory of a training run grew from 1.70 to
2.49 GiB at its seventh step. Hence opt-in.

It must run before the threads that allocate exist (before JAX's backend starts): the ``pclr``
command line, ``train.py`` and ``pclr bench``'s contender call it first. Library users may call
it themselves. Off unless ``PCLR_KEEP_HOST_MEMORY=1``; on a C library other than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import os

ENV = "PCLR_KEEP_HOST_MEMORY"
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))


def keep_freed_memory() -> str:
    """With ``PCLR_KEEP_HOST_MEMORY=1``, sets glibc's ``malloc`` to keep freed memory (module
    docstring); returns what it did: ``"kept"``, ``"off"`` or ``"unavailable: <why>"``."""
    if os.environ.get(ENV, "0") != "1":
        return "off"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: AttributeError elsewhere)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        return f"unavailable: not glibc ({error})"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    refused = [param for param, value in SETTINGS if mallopt(param, value) != 1]
    return f"unavailable: mallopt refused {refused}" if refused else "kept"
