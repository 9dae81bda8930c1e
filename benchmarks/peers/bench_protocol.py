"""pclr-jax's contender protocol (``pclr_jax/benchmarking/protocol.py``) for the peer scripts.

The peers run in virtual environments without pclr-jax, so they load the protocol file by its
path: ``$PCLR_BENCH_PROTOCOL`` (which ``pclr bench`` sets for them), else the one in this
checkout; it needs the standard library only. A peer script imports this module
(its own directory is on ``sys.path`` when it runs as a script): ``from bench_protocol import
protocol``.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

PROTOCOL = os.environ.get("PCLR_BENCH_PROTOCOL") or (
    pathlib.Path(__file__).resolve().parents[2] / "pclr_jax/benchmarking/protocol.py"
)

_spec = importlib.util.spec_from_file_location("pclr_bench_protocol", PROTOCOL)
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)
