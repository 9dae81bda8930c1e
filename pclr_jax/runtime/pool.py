"""Worker processes for CPU work beside the main process: an order-preserving, memory-bounded
process-pool map, and the CPUs this process may use.

Imports neither JAX nor tensorflow-datasets, so worker processes start quickly.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# How often a worker process checks that the process that started it is alive (s).
PARENT_CHECK_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: a daemon thread that ends this worker once ``parent`` is gone (it is
    then re-parented, so ``os.getppid()`` changes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def ordered_parallel_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    max_pending: int | None = None,
) -> Iterator[Any]:
    """``map(fn, items)`` in order, computed by ``workers`` processes (``0``: in this process).

    At most ``max_pending`` items (default ``4 * workers``) are in flight, so a slow consumer (the
    tfds writer, the device) never makes results pile up in memory. Workers are started with
    ``spawn``, which is safe in processes that hold threads (JAX, tqdm); ``fn`` must be picklable
    (a module-level function or a ``functools.partial`` of one). A worker whose parent is gone
    (killed with SIGKILL, which it cannot pass on) exits within a second instead of waiting for
    work forever.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    max_pending = max_pending or 4 * workers
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_pending:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
