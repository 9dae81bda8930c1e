"""Stopping a run on SIGTERM/SIGINT at one step that every process agrees on, without host syncs.

A scheduler's preemption notice (SIGTERM) or a user's Ctrl-C (SIGINT) reaches the processes of a
multi-host job at different steps, or only some of them. Each process records its own signal in
:class:`StopSignals`, which hands every step a per-device flag array (the signal number on each of
the process's devices, 0 for none). The training step reduces the flags with one ``lax.pmax``
(:func:`pclr_jax.step.train_step.agree_on_stop`) and returns the agreed signal with its metrics,
so every process reads the same answer for the same step, whenever it fetches metrics. The loop
fetches them every ``log_every_steps`` steps and at checkpoints (``training/step_metrics.py``);
the run stops after the step at which a fetched ``stop_signal`` is non-zero, saving it.

Nothing here blocks: the flag array is built once, and again only when a signal arrives (a few
bytes to the devices). The previous design exchanged the flags with a blocking
``process_allgather`` every few steps, which kept the host from running ahead of the devices.

Why not JAX's preemption sync point (``multihost_utils.reached_preemption_sync_point``): that
service reacts to SIGTERM only (not to SIGINT), needs ``jax.distributed`` (so a single process
would need a second mechanism) and owns the SIGTERM handler in C++, which a Python handler
replaces silently.
"""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.runtime.distributed import DATA_AXIS

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Records SIGTERM/SIGINT in this process and shows it to the training step (a context
    manager that installs the handlers and restores the previous ones on exit).

    Args:
        mesh: the ``'data'`` mesh of the step; ``device_flags`` is sharded over it.
    """

    def __init__(self, mesh: Mesh):
        self._sharding = NamedSharding(mesh, P(DATA_AXIS))
        self._local_devices = len(mesh.local_devices)
        self.received: int = 0  # the signal number this process received (0: none)
        self._flags: tuple[int, jax.Array] | None = None  # (signal, its device array)
        self._previous = {}

    def __enter__(self) -> StopSignals:
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

    def device_flags(self) -> jax.Array:
        """``(devices,)`` int32 sharded ``P('data')``: this process's signal number on each of
        its devices (0: none). The same array until a signal arrives."""
        if self._flags is None or self._flags[0] != self.received:
            local = np.full(self._local_devices, self.received, np.int32)
            array = jax.make_array_from_process_local_data(self._sharding, local)
            self._flags = (self.received, array)
        return self._flags[1]


def signal_name(signum: int) -> str:
    """``15 -> 'SIGTERM'``."""
    return signal.Signals(signum).name
