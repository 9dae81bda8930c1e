"""Which convolution formulation ``conv_impl="auto"`` should pick on this backend.

``pclr_jax.model.conv.AUTO_IMPL`` holds, per backend, the formulation used in training and the
one used in inference. On CPU it was measured (``docs/speed_cpu.md``); on GPU and TPU it is the
plain ``lax`` convolution until measured there. :func:`time_formulations` measures it on JAX's
default device: the PCLR model (with its head) in training mode, forward and backward with
respect to its parameters (``jit(grad)``: the stride-4 kernel-16 convolutions' input gradient is
where the formulations differ), for each of ``xla``, ``space_to_depth``, ``space_to_depth_grad``
and ``dft`` (the blocked-DFT stride-1 convolutions, :mod:`pclr_jax.model.dft_conv`); and the
encoder's forward pass in inference mode (the ``embed`` output) for ``xla``, ``space_to_depth``
and ``dft`` (``space_to_depth_grad``'s forward is ``xla``'s). Every
program is compiled first, then they are timed interleaved (A, B, C, A, B, C, ...) over
``rounds`` rounds on one batch generated on the device, and the median is kept.

:func:`suggest_entry` turns the timings into the table entry: per mode, each formulation's time
relative to ``xla``'s in the same dtype, averaged over the dtypes measured; :func:`choose` keeps
``xla`` unless another formulation is faster by more than ``margin`` (3% by default: below that
a single run does not tell them apart, and ``xla`` is the plain formulation).
"""

from __future__ import annotations

import statistics
import time

from pclr_jax.model.encoder import EncoderConfig

REFERENCE = "xla"
CANDIDATES = {
    "training": ("xla", "space_to_depth", "space_to_depth_grad", "dft"),
    "inference": ("xla", "space_to_depth", "dft"),
}


def choose(relative_time: dict[str, float], reference: str = REFERENCE, margin: float = 0.03):
    """The formulation with the smallest time in ``relative_time`` (formulation -> time, in any
    unit), or ``reference`` unless that one is faster than it by more than ``margin``."""
    best = min(relative_time, key=relative_time.get)
    if relative_time[best] < (1 - margin) * relative_time[reference]:
        return best
    return reference


def suggest_entry(timings: list[dict], margin: float = 0.03) -> dict:
    """The ``AUTO_IMPL`` entry the timings call for.

    ``timings``: rows with ``mode`` (``training``/``inference``), ``dtype``, ``impl`` and
    ``median_s``. Returns ``{"training": impl, "inference": impl, "relative": {mode: {impl:
    time relative to xla's, averaged over dtypes}}, "dtypes": [...]}``; a mode without timings
    keeps ``xla``.
    """
    entry: dict = {"relative": {}, "dtypes": sorted({row["dtype"] for row in timings})}
    for mode in CANDIDATES:
        rows = [row for row in timings if row["mode"] == mode]
        reference = {row["dtype"]: row["median_s"] for row in rows if row["impl"] == REFERENCE}
        ratios: dict[str, list[float]] = {}
        for row in rows:
            if row["dtype"] in reference:
                ratios.setdefault(row["impl"], []).append(row["median_s"] / reference[row["dtype"]])
        relative = {impl: statistics.mean(values) for impl, values in ratios.items()}
        entry["relative"][mode] = relative
        entry[mode] = choose(relative, REFERENCE, margin) if REFERENCE in relative else REFERENCE
    return entry


def _programs(config: EncoderConfig, batch: int, seed: int):
    """``{(mode, impl): (compiled, args)}`` of every candidate, compiled, on the default device;
    the ECGs ``(batch, samples, leads)`` float32 are generated there."""
    import jax
    import jax.numpy as jnp

    from pclr_jax.benchmarking.workloads import random_on_device
    from pclr_jax.model.encoder import PCLRModel, init_variables
    from pclr_jax.step.train_step import make_forward

    variables = init_variables(config, jax.random.key(seed))
    shape = (batch, config.n_samples, config.n_leads)
    (ecgs,) = random_on_device([jax.ShapeDtypeStruct(shape, jnp.float32)], seed, scale=0.5)
    key = jax.random.key(seed)
    programs = {}
    for mode, impls in CANDIDATES.items():
        for impl in impls:
            model = PCLRModel(config.replace(conv_impl=impl))
            if mode == "training":
                forward = make_forward(model)

                def objective(params, forward=forward):
                    z, stats = forward(params, variables["batch_stats"], ecgs, key)
                    return jnp.sum(z**2), stats

                fn = jax.jit(jax.grad(objective, has_aux=True))
                args = (variables["params"],)
            else:
                fn = jax.jit(lambda v, x, model=model: model.apply(v, x, method=PCLRModel.embed))
                args = (variables, ecgs)
            programs[(mode, impl)] = (fn.lower(*args).compile(), args)
    return programs


def time_formulations(
    config: EncoderConfig, dtype: str, batch: int, rounds: int, seed: int = 0
) -> list[dict]:
    """Median seconds per call of each candidate (module docstring) in compute ``dtype``
    (``fp32``/``bf16``): rows ``{mode, dtype, impl, batch, median_s, ecg_per_s, times_s}``."""
    import jax

    config = config.replace(dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype])
    programs = _programs(config, batch, seed)
    for compiled, args in programs.values():  # first calls: allocation, autotuning caches
        jax.block_until_ready(compiled(*args))
    times: dict = {key: [] for key in programs}
    for _ in range(rounds):
        for key, (compiled, args) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[key].append(time.perf_counter() - start)
    rows = []
    for (mode, impl), samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {
                "mode": mode,
                "dtype": dtype,
                "impl": impl,
                "batch": batch,
                "median_s": median,
                "ecg_per_s": batch / median,
                "times_s": samples,
            }
        )
    return rows
