"""Global batches placed on the devices ahead of the training step that consumes them.

:class:`DevicePrefetcher` wraps a host-batch iterator (the grain pair loader): a background
thread takes the next host batch, places it on the mesh
(:func:`pclr_jax.data.loader.to_global_batch`) and queues it, so reading and the host-to-device
transfer overlap the running step instead of following it. The views stay in the dtype the loader
emits (float16, as the ECGs are stored: half the bytes of float32) on the devices too: the
training step casts them inside its compiled program, so no float32 copy of a batch is ever
written (the thread used to run a separate cast program per batch, which held a float32 copy
beside the float16 one until the step had run, and added a launch).

Resumption stays exact: each queued batch carries the loader state recorded right after it was
read, and :meth:`DevicePrefetcher.get_state` returns the state of the last batch *consumed*, not
of the batches waiting in the queue. The state is JSON bytes (the ``grain.DatasetIterator`` state
of the wrapped loader), so ``grain.checkpoint.CheckpointSave`` / ``CheckpointRestore`` store it in
an Orbax checkpoint exactly as they store the bare loader (same file, same content).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

HostBatch = Mapping[str, np.ndarray]
DeviceBatch = dict[str, jax.Array]


class _Failure:
    """An exception raised in the reading thread, re-raised in the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class DevicePrefetcher(Iterator[DeviceBatch]):
    """Keeps up to ``buffer_size`` global batches on the devices ahead of the consumer.

    Args:
        loader: host batches with ``get_state() -> dict`` and ``set_state(dict)`` (a
            ``grain.DatasetIterator``).
        place: host batch -> device batch, e.g. ``functools.partial(to_global_batch, mesh=m)``.
        buffer_size: batches read and placed ahead (>= 1). Each holds one global batch in device
            memory.

    The thread starts on the first ``next``; ``set_state`` stops it, drops the queued batches and
    repositions the loader. Errors of the loader (a bad record) are raised by
    the ``next`` that would have returned that batch.
    """

    def __init__(
        self,
        loader: Any,
        place: Callable[[HostBatch], DeviceBatch],
        buffer_size: int = 2,
    ):
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be >= 1")
        self._loader = loader
        self._place = place
        self._buffer_size = buffer_size
        self._consumed_state = loader.get_state()
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    batch = next(self._loader)
                except StopIteration:
                    item = _END
                else:
                    item = (self._place(batch), self._loader.get_state())
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if item is _END:
                    return
        except BaseException as error:  # noqa: BLE001 (handed to the consumer, re-raised there)
            out.put(_Failure(error))

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self._buffer_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(self._queue, self._stop), daemon=True, name="prefetch"
        )
        self._thread.start()

    def __next__(self) -> DeviceBatch:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        if item is _END:
            self._queue.put(_END)  # stay exhausted
            raise StopIteration
        batch, self._consumed_state = item
        return batch

    def get_state(self) -> bytes:
        """The loader state after the last consumed batch, as JSON bytes."""
        return json.dumps(self._consumed_state).encode()

    def set_state(self, state: bytes) -> None:
        """Repositions the loader (state from :meth:`get_state`); queued batches are dropped."""
        self.close()
        self._consumed_state = json.loads(state)
        self._loader.set_state(self._consumed_state)

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; the thread starts on ``next``."""

    def close(self) -> None:
        """Stops the reading thread and drops queued batches (the next ``next`` restarts it)."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._loader.set_state(self._consumed_state)
        self._thread = self._queue = self._stop = None
