"""A process of a multi-host job dies: the others stop within a bounded time, with one line.

Without this, JAX's coordination service aborts every other process as soon as it notices the
death (``SIGABRT``, exit status 134, a C++ stack dump and no sentence saying what happened; an
earlier try saw it 87 s after a ``SIGKILL``), leaving a launcher to guess whether a restart helps.
Here, instead, the survivors print one line naming the lost process, the last complete
checkpoint and how to resume, and exit with :data:`EXIT_PROCESS_LOST` (75, ``EX_TEMPFAIL`` of
``sysexits.h``: "a temporary failure; the user is invited to retry"), which a launcher can
restart on (restarting every process resumes from that checkpoint).

How (:func:`watched_job`):

* ``jax.distributed`` is initialised with ``jax_enable_recoverability``: the coordination service
  then records a dead process instead of aborting the others (whose collectives with the dead one
  would otherwise wait forever, or until the abort);
* :class:`PeerWatch`: a daemon thread in every process writes a heartbeat counter into the
  service's key-value store every ``interval_s`` and reads everyone's; a peer whose counter has
  not moved for ``timeout_s`` seconds is lost: the thread prints the line and ends the process
  with ``os._exit(75)`` (the main thread may be blocked in a collective that never returns);
* at the end, :func:`shutdown_in_order`: with recoverability, JAX no longer holds process 0 at
  exit until the others have disconnected, and a process whose coordinator disappears first is
  aborted; so every process announces its exit, processes 1.. disconnect first and process 0
  waits for them (bounded).

Limits. Process 0 hosts the coordination service: when *it* dies, JAX aborts the others itself
within about a second (exit 134), before Python can act (the service's failure callback cannot
be replaced from Python in jaxlib 0.10.2: the binding raises ``std::bad_cast``); a launcher should
treat 134 like 75 there. A process that hangs rather than dies keeps sending heartbeats. The
heartbeat is a Python thread: a peer whose main thread held the GIL for ``timeout_s`` would be
taken for dead, which is why the default (``distributed.lost_process_timeout_s``, 60 s) is far
above any pause of the training loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import jax

from pclr_jax.runtime.distributed import maybe_initialize_distributed

EXIT_PROCESS_LOST = 75  # EX_TEMPFAIL
_HEARTBEAT = "pclr/heartbeat/"
_EXITING = "pclr/exiting/"

log = logging.getLogger(__name__)


def _client():
    """The ``jax.distributed`` client (JAX exposes no public handle on its key-value store)."""
    from jax._src import distributed

    return distributed.global_state.client


class PeerWatch:
    """Ends this process with a clear line when another process stops sending heartbeats.

    Args:
        timeout_s: seconds without a peer's heartbeat after which it is lost.
        describe_resume: called once a peer is lost; its sentence (what was saved, how to resume)
            ends the line.
        interval_s: seconds between heartbeats (default ``min(5, timeout_s / 5)``).
        exit: called with :data:`EXIT_PROCESS_LOST` (``os._exit``; tests pass a recorder).
    """

    def __init__(
        self,
        timeout_s: float,
        describe_resume: Callable[[], str],
        interval_s: float | None = None,
        exit: Callable[[int], object] = os._exit,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be positive")
        self.timeout_s = timeout_s
        self.interval_s = interval_s or min(5.0, timeout_s / 5)
        self._describe_resume = describe_resume
        self._exit = exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peer-watch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the watch (a heartbeat call in flight is waited for, a few seconds at most)."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 10)

    def _run(self) -> None:
        client, me, count = _client(), jax.process_index(), jax.process_count()
        started = time.monotonic()
        last = {peer: (None, started) for peer in range(count) if peer != me}
        reachable, beat = started, 0
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                beat += 1
                client.key_value_set(f"{_HEARTBEAT}{me}", str(beat), allow_overwrite=True)
                seen = dict(client.key_value_dir_get(_HEARTBEAT))
            except Exception as error:  # noqa: BLE001 (the service is in process 0)
                if now - reachable > self.timeout_s:
                    self._lost(
                        0,
                        f"its coordination service did not answer for "
                        f"{now - reachable:.0f} s: {error}",
                    )
                continue
            reachable = now
            for peer, (value, since) in last.items():
                current = seen.get(f"{_HEARTBEAT}{peer}")
                if current != value:
                    last[peer] = (current, now)
                elif now - since > self.timeout_s:
                    self._lost(peer, f"no heartbeat for {now - since:.0f} s")

    def _lost(self, peer: int, why: str) -> None:
        if self._stop.is_set():
            return
        line = (
            f"pclr: process {peer} of {jax.process_count()} was lost ({why}); process "
            f"{jax.process_index()} stops with exit status {EXIT_PROCESS_LOST}. "
            f"{self._describe_resume()}"
        )
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        self._stop.set()
        self._exit(EXIT_PROCESS_LOST)


def announce_exit() -> None:
    """Tells the other processes that this one is leaving the job (the key they wait for)."""
    _client().key_value_set(f"{_EXITING}{jax.process_index()}", "1")


def wait_for_peers_to_exit(timeout_s: float) -> bool:
    """Waits up to ``timeout_s`` until every other process has called :func:`announce_exit`;
    returns whether they all did."""
    client, me, count = _client(), jax.process_index(), jax.process_count()
    deadline = time.monotonic() + timeout_s
    try:
        for peer in range(count):
            if peer != me:
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                client.blocking_key_value_get(f"{_EXITING}{peer}", left_ms)
    except Exception:  # noqa: BLE001 (DEADLINE_EXCEEDED: a peer that never announced itself)
        return False
    return True


def shutdown_in_order(timeout_s: float) -> None:
    """Disconnects from ``jax.distributed`` after :func:`announce_exit`: processes 1.. at once,
    process 0 (which hosts the coordination service) once the others have disconnected, waiting
    at most ``timeout_s`` for them to announce it."""
    if jax.process_index() == 0:
        if wait_for_peers_to_exit(timeout_s):
            _client().get_live_nodes(list(range(jax.process_count())))  # returns once they left
        else:
            log.warning("not every process announced its exit; process 0 disconnects anyway")
    jax.distributed.shutdown()


@contextlib.contextmanager
def watched_job(timeout_s: float, describe_resume: Callable[[], str]) -> Iterator[None]:
    """:func:`maybe_initialize_distributed` that survives a lost process, a :class:`PeerWatch`
    while the body runs, and :func:`shutdown_in_order` after it.

    When the body raises, the watch keeps running until every other process has announced its
    exit too (a coordinated error, e.g. ``NonFiniteLossError``) or for ``timeout_s`` plus two
    heartbeats: a peer's death often surfaces first as an error in a collective (gloo: "Connection
    reset by peer"), and the watch then ends this process with status 75 and its line. A single
    process, or a ``jax.distributed`` initialised earlier by someone else (whose settings it does
    not change), runs the body unwatched.
    """
    if not maybe_initialize_distributed(tolerate_lost_processes=True) or jax.process_count() == 1:
        yield
        return
    watch = PeerWatch(timeout_s, describe_resume)
    watch.start()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        announce_exit()
        if failed:
            wait_for_peers_to_exit(timeout_s + 2 * watch.interval_s)
        watch.stop()
        shutdown_in_order(timeout_s)
