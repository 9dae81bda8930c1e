"""FLOPs of the PCLR model, counted from its configuration, and from XLA's cost analysis.

Both count a multiply-add as 2 FLOPs (a 1-D convolution producing ``n_out x c_out`` values from
a kernel of ``k x c_in`` costs ``2 n_out c_out k c_in``) and skip the kernel taps that fall on a
'SAME' convolution's zero padding.

* The analytic count (:func:`train_flops_per_ecg`, :func:`forward_flops_per_ecg`) reads only the
  ``EncoderConfig``: the convolutions and the dense layers of the projection head. It is what
  ``pclr bench`` and the accelerator check report, because it does not depend on the backend:
  on GPU, XLA's cost analysis returns -1 or misses the work of convolutions it sends to cuDNN
  (custom calls). For the released model it gives 3.65 GFLOP per ECG forward and 10.86 per
  ECG per training step, within 1% of XLA's CPU count of the real step, which also counts the
  element-wise work (batch norms, activations, pools, loss, optimizer update):
  ``tests/test_bench.py::test_analytic_flops_match_xla_cost_analysis_on_cpu``.
* :func:`cost_flops` and :func:`step_flops` read XLA's cost analysis of a lowered or compiled
  program, and return None where XLA reports no count (never raise: a missing count must not
  fail a benchmark row).

A compiled program that runs on several devices (``jax.shard_map``, or ``jit`` over sharded
arrays) is the per-device program of XLA's SPMD partitioner, so its cost analysis counts ONE
device's work: :func:`step_flops` multiplies by the number of devices it runs on to count the
whole step (work replicated on every device, like the optimizer update, is then counted once per
device, as it is done once per device).
"""

from __future__ import annotations

from typing import Any

from pclr_jax.model.conv import same_padding
from pclr_jax.model.encoder import EncoderConfig


def conv_macs(n: int, k: int, stride: int, c_in: int, c_out: int) -> int:
    """Multiply-adds of a 'SAME' 1-D convolution of one ECG: ``(n, c_in) -> (ceil(n/stride),
    c_out)`` with a kernel of ``k`` taps, counting only the taps on input samples."""
    left, _ = same_padding(n, k, stride)
    taps = 0
    for o in range(-(-n // stride)):
        start = o * stride - left  # input sample under the kernel's first tap
        taps += max(0, min(k, n - start) - max(0, -start))
    return taps * c_in * c_out


def _layers(config: EncoderConfig) -> list[tuple[str, int]]:
    """``(name, multiply-adds per ECG)`` of every convolution and dense layer, in order."""
    k = config.kernel_size
    layers = [("stem_conv", conv_macs(config.n_samples, k, 1, config.n_leads, config.stem_filters))]
    n, channels, skip_channels = config.n_samples, config.stem_filters, config.stem_filters
    for i, (filters, ds) in enumerate(zip(config.unit_filters, config.downsample, strict=True)):
        n_out = -(-n // ds)
        if skip_channels != filters:
            layers.append((f"unit_{i}/skip_conv", n_out * skip_channels * filters))
        layers.append((f"unit_{i}/conv_0", conv_macs(n, k, 1, channels, filters)))
        layers.append((f"unit_{i}/conv_1", conv_macs(n, k, ds, filters, filters)))
        n, channels, skip_channels = n_out, filters, filters
    width = config.embed_dim
    for j, size in enumerate(config.head_sizes):
        layers.append((f"head/dense_{j}", width * size))
        width = size
    return layers


def forward_flops_per_ecg(config: EncoderConfig, with_head: bool = True) -> float:
    """FLOPs of one ECG's forward pass: the encoder's convolutions (and the head's dense
    layers if ``with_head``)."""
    return float(
        sum(2 * macs for name, macs in _layers(config) if with_head or not name.startswith("head"))
    )


def train_flops_per_ecg(config: EncoderConfig) -> float:
    """FLOPs of one ECG (one view) in a training step: forward, gradient with respect to each
    layer's input and to its weights (each as many multiply-adds as the forward pass), less the
    gradient with respect to the ECG itself, which is not computed."""
    (_, stem), *_ = _layers(config)
    return 3 * forward_flops_per_ecg(config) - 2.0 * stem


def cost_flops(stage: Any) -> float | None:
    """FLOPs of a ``jax.stages.Lowered`` or ``Compiled`` (``fn.lower(...)``/``.compile()``),
    or None if XLA reports no count (or -1, as for cuDNN convolutions on GPU).

    ``cost_analysis()`` returns a dict (or, in older JAX, a list with one dict per program).
    """
    try:
        analysis = stage.cost_analysis()
    except (NotImplementedError, RuntimeError):  # a backend without it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return None if flops is None or flops < 0 else float(flops)


def program_devices(compiled: Any) -> int:
    """How many devices a ``jax.stages.Compiled`` runs on (the union of its inputs' devices)."""
    import jax

    devices = set()
    for sharding in jax.tree.leaves(compiled.input_shardings):
        devices |= set(sharding.device_set)
    return max(1, len(devices))


def step_flops(compiled: Any) -> float | None:
    """FLOPs of one call of ``compiled`` over all its devices (module docstring); None if XLA
    reports no count."""
    flops = cost_flops(compiled)
    return None if flops is None else flops * program_devices(compiled)


def jit_flops(fn: Any, *args: Any) -> float | None:
    """FLOPs of ``jax.jit(fn)(*args)`` (lowered, not compiled: cheap); None if XLA has none."""
    import jax

    return cost_flops(jax.jit(fn).lower(*args))
