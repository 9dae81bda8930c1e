"""FLOPs of a jitted computation from XLA's cost analysis.

XLA counts a multiply-add as 2 FLOPs, like the usual hand counts (a 1-D convolution producing
``n_out x c_out`` values from a kernel of ``k x c_in`` costs ``2 n_out c_out k c_in``), and counts
element-wise work too (batch norm, activations, the optimizer update), so it is slightly above a
count of the matrix products alone.

A compiled program that runs on several devices (``jax.shard_map``, or ``jit`` over sharded
arrays) is the per-device program of XLA's SPMD partitioner, so its cost analysis counts ONE
device's work: :func:`step_flops` multiplies by the number of devices it runs on to count the
whole step (work replicated on every device, like the optimizer update, is then counted once per
device, as it is done once per device).
"""

from __future__ import annotations

from typing import Any


def cost_flops(stage: Any) -> float:
    """FLOPs of a ``jax.stages.Lowered`` or ``Compiled`` (``fn.lower(...)``/``.compile()``).

    ``cost_analysis()`` returns a dict (or, in older JAX, a list with one dict per program);
    raises ``ValueError`` if XLA reports no FLOP count.
    """
    analysis = stage.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    if flops is None or flops < 0:
        raise ValueError(f"XLA's cost analysis has no FLOP count: {analysis!r}")
    return float(flops)


def program_devices(compiled: Any) -> int:
    """How many devices a ``jax.stages.Compiled`` runs on (the union of its inputs' devices)."""
    import jax

    devices = set()
    for sharding in jax.tree.leaves(compiled.input_shardings):
        devices |= set(sharding.device_set)
    return max(1, len(devices))


def step_flops(compiled: Any) -> float:
    """FLOPs of one call of ``compiled`` over all its devices (module docstring)."""
    return cost_flops(compiled) * program_devices(compiled)


def jit_flops(fn: Any, *args: Any) -> float:
    """FLOPs of ``jax.jit(fn)(*args)`` (lowered, not compiled: cheap)."""
    import jax

    return cost_flops(jax.jit(fn).lower(*args))
