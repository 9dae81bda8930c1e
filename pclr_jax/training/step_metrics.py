"""Training metrics fetched only at logging and checkpoint steps, and the input-stall measurement.

The training loop dispatches steps without reading anything back: the step's metrics, the agreed
stop signal and the first non-finite step stay on the devices (``pclr_jax.step.train_step``,
``control``). The host reads them at *sync steps* only:

* every ``log_every_steps`` steps, one step late: :class:`PendingFetch` starts the copy of step
  ``s``'s metrics and reads them after step ``s + 1`` has been dispatched, so the devices never
  wait for the host's bookkeeping;
* at once (:func:`fetch`) before anything that needs the current state checked: a checkpoint, an
  evaluation, a stop, the last step. A non-finite loss is therefore always seen before the state
  that produced it is saved.

Between sync steps the loop makes no blocking device-to-host transfer (tested,
``tests/test_host_syncs.py``).

:class:`InputStallMeter` measures, per logging window, the wall time per step and the share of it
the loop spent waiting for the next batch (``input_stall_fraction``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax

CONTROL_METRICS = ("nonfinite_step", "stop_signal")


@dataclasses.dataclass(frozen=True)
class Fetched:
    """One step's metrics on the host.

    Attributes:
        step: the step number (updates applied, 1-based).
        metrics: the float metrics (``loss``, ``learning_rate``, ...).
        nonfinite_step: the first step up to ``step`` whose loss was not finite (0: none).
        stop_signal: the signal number the processes agreed to stop on (0: none).
    """

    step: int
    metrics: dict[str, float]
    nonfinite_step: int
    stop_signal: int


def fetch(step: int, metrics: Mapping[str, jax.Array]) -> Fetched:
    """Reads step ``step``'s metrics (waiting for the step to finish)."""
    host = jax.device_get(dict(metrics))
    return Fetched(
        step=step,
        metrics={k: float(v) for k, v in host.items() if k not in CONTROL_METRICS},
        nonfinite_step=int(host["nonfinite_step"]),
        stop_signal=int(host["stop_signal"]),
    )


class PendingFetch:
    """A step's metrics whose copy to the host has started; :meth:`result` reads them."""

    def __init__(self, step: int, metrics: Mapping[str, jax.Array]):
        self.step = step
        self._metrics = metrics
        for value in metrics.values():
            value.copy_to_host_async()

    def result(self) -> Fetched:
        return fetch(self.step, self._metrics)


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

    def count_steps(self, steps: int) -> None:
        """``steps`` more steps of the window have finished (their metrics are on the host)."""
        self._steps += steps

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
