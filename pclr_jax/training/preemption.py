"""Stopping a run on SIGTERM/SIGINT at one step that every process agrees on.

A scheduler's preemption notice (SIGTERM) or a user's Ctrl-C (SIGINT) reaches the processes of a
multi-host job at different steps, or only some of them. Each process records its own signal; every
``check_every_steps`` steps all processes exchange what they received (``process_allgather`` of
the signal numbers), so they all see the same answer at the same step, save one checkpoint there
together and stop. A single process checks its own flag every step and needs no exchange.

Why an exchange at a fixed cadence rather than JAX's preemption sync point
(``multihost_utils.reached_preemption_sync_point``): that service reacts to SIGTERM only (not to
SIGINT), needs ``jax.distributed`` (so a single process would need a second mechanism) and owns the
SIGTERM handler in C++, which a Python handler replaces silently. The exchange here handles both
signals the same way in one code path, is one small collective every ``check_every_steps`` steps
(the host waits for the step in flight once per check), and picks a step that is a pure function of
which signals had arrived: the first checked step after the first signal.
"""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopAgreement:
    """Turns SIGTERM/SIGINT into a stop at a step all processes agree on (a context manager).

    ``should_stop(step)`` returns ``None`` to go on, or the name of the signal that stops the run
    (the lowest-numbered process's signal when several processes received one), the same value at
    the same step in every process. It must be called after every step, by every process.
    """

    def __init__(self, check_every_steps: int = 1):
        if check_every_steps < 1:
            raise ValueError(f"check_every_steps={check_every_steps} must be >= 1")
        self.check_every_steps = check_every_steps
        self.received: int = 0  # the signal number this process received (0: none)
        self._previous = {}

    def __enter__(self) -> StopAgreement:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if not self.received:
            self.received = signum
            log.warning("%s received", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def should_stop(self, step: int) -> str | None:
        """The signal name when the run stops after ``step`` (saving it), else ``None``."""
        if jax.process_count() == 1:
            return signal.Signals(self.received).name if self.received else None
        if step % self.check_every_steps:
            return None
        from jax.experimental import multihost_utils

        received = np.asarray(multihost_utils.process_allgather(np.int32(self.received)))
        senders = np.flatnonzero(received)
        if not senders.size:
            return None
        return signal.Signals(int(received[senders[0]])).name
