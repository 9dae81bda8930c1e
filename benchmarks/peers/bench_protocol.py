"""pclr-jax's contender protocol (``pclr_jax/benchmarking/protocol.py``) for the peer scripts.

The peers run in virtual environments without pclr-jax, so they load the protocol file by its
path in this checkout; it needs the standard library only. A peer script imports this module
(its own directory is on ``sys.path`` when it runs as a script): ``from bench_protocol import
protocol``.
"""

from __future__ import annotations

import importlib.util
import pathlib

PROTOCOL = pathlib.Path(__file__).resolve().parents[2] / "pclr_jax/benchmarking/protocol.py"

_spec = importlib.util.spec_from_file_location("pclr_bench_protocol", PROTOCOL)
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)
