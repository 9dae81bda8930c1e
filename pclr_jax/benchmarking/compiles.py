"""How many XLA compilations a process ran, and how long they took.

JAX reports every backend compilation (``jax.monitoring`` event
``/jax/core/compile/backend_compile_duration``, a duration in seconds; a program found in the
persistent compilation cache is reported too, and also as ``/jax/compilation_cache/cache_hits``).
:class:`CompileCounter` listens to both. The accelerator check counts the compilations of each
stage with it, in its worker processes and (as a pytest plugin, ``-p
pclr_jax.benchmarking.compiles``) in the test session, whose counts it reads from the JSON file
named by ``PCLR_COMPILES_OUT``: ``{"compiles": N, "compile_s": S, "cache_hits": H, "programs":
{name: count}}``. Compile counts are what the check's time estimate on an accelerator is built
from (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """Counts this process's XLA compilations from the moment it is made (see module doc)."""

    def __init__(self):
        import jax.monitoring

        self.compiles, self.compile_s, self.cache_hits = 0, 0.0, 0
        self.programs: dict[str, int] = {}
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.compiles += 1
            self.compile_s += duration_secs
            name = str(kwargs.get("fun_name", "?"))
            self.programs[name] = self.programs.get(name, 0) + 1

    def _on_event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def totals(self) -> dict:
        """``{"compiles": N, "compile_s": seconds, "cache_hits": H, "programs": {name: N}}``."""
        return {
            "compiles": self.compiles,
            "compile_s": round(self.compile_s, 3),
            "cache_hits": self.cache_hits,
            "programs": dict(self.programs),
        }


_SESSION: dict = {}


def pytest_configure(config) -> None:
    """As a pytest plugin: start counting before any test imports run."""
    _SESSION["counter"] = CompileCounter()


def pytest_sessionfinish(session, exitstatus) -> None:
    """As a pytest plugin: write the session's totals to ``$PCLR_COMPILES_OUT`` (if set)."""
    path = os.environ.get("PCLR_COMPILES_OUT")
    if path and "counter" in _SESSION:
        with open(path, "w") as f:
            json.dump(_SESSION["counter"].totals(), f)
