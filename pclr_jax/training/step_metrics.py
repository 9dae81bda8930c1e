"""Training metrics fetched without stalling the devices, and the input-stall measurement.

:class:`LateMetrics` leaves each step's metrics on the devices until the next step has been
dispatched, then fetches them: the host waits for step ``s`` while step ``s + 1`` already runs, so
the devices never wait for the host's bookkeeping. The loop flushes before anything that needs
the current step checked (a checkpoint, an evaluation, a stop), so a non-finite loss is always
seen before the state that produced it is saved.

:class:`InputStallMeter` measures, per logging window, the wall time per step and the share of it
the loop spent waiting for the next batch (``input_stall_fraction``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax


class LateMetrics:
    """Holds dispatched steps' metrics (device arrays) until they are fetched, in step order."""

    def __init__(self):
        self._pending: list[tuple[int, Mapping[str, jax.Array]]] = []

    def push(
        self, step: int, metrics: Mapping[str, jax.Array]
    ) -> list[tuple[int, dict[str, float]]]:
        """Fetches the steps pushed before (already finished or nearly), then queues ``step``."""
        fetched = self.flush()
        self._pending.append((step, metrics))
        return fetched

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        """Fetches every queued step (waiting for the last one): ``[(step, {name: float})]``."""
        fetched = [
            (step, {name: float(value) for name, value in jax.device_get(metrics).items()})
            for step, metrics in self._pending
        ]
        self._pending = []
        return fetched


class InputStallMeter:
    """Wall time per step and time spent waiting for batches, over a window of steps."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        """Starts a new window now (after an evaluation, say, which is not training time)."""
        self._start = time.perf_counter()
        self._wait = 0.0
        self._steps = 0

    def next_batch(self, feed: Iterator[Any]) -> Any:
        """``next(feed)``, timing the wait."""
        start = time.perf_counter()
        batch = next(feed)
        self._wait += time.perf_counter() - start
        return batch

    def count_step(self) -> None:
        """One step of the window has finished (its metrics are on the host)."""
        self._steps += 1

    def window(self, ecgs_per_step: int) -> dict[str, float]:
        """The window's ``step_time_s``, ``ecg_per_s``, ``input_wait_s`` (per step) and
        ``input_stall_fraction`` (waiting / wall time); then starts the next window."""
        elapsed = time.perf_counter() - self._start
        steps = max(self._steps, 1)
        metrics = {
            "step_time_s": elapsed / steps,
            "ecg_per_s": ecgs_per_step * steps / elapsed,
            "input_wait_s": self._wait / steps,
            "input_stall_fraction": self._wait / elapsed,
        }
        self.restart()
        return metrics
