"""Machine facts, per-contender summary rows and the Markdown table of ``pclr bench``.

Definitions (one row per contender):

* ``ecg_per_s``: ECGs per step / median step time. One ECG is one view: a train step on ``B``
  pairs processes ``2B`` ECGs; a loss step ``2B`` projection rows; an embed step ``batch_size``.
* ``speedup``: pclr-jax's speed over this contender's; interleaved runs use the median over
  rounds of the ratio of the two step times measured side by side (robust to load changes),
  sequential runs the ratio of the medians.
* ``gflop_per_s``: pclr-jax's XLA FLOP count per ECG (the same model and work for everyone; the
  whole step over all its devices) x ``ecg_per_s``; ``peak_fraction`` divides it by the measured
  matrix-product peak of the dtype times the number of devices the contender used.
* ``compile_s``: the contender's own compile time where it measures one (pclr-jax's ahead-of-time
  ``train`` and ``loss`` steps), else the first call minus the median step (tracing, compilation,
  first-run allocation; noisy on a loaded machine).
* ``maxrss_mib``: the contender process's peak resident memory (host).
* ``device_peak_mib``: the accelerator memory its framework reports as peak (JAX:
  ``memory_stats()['peak_bytes_in_use']``, the largest over its devices; PyTorch:
  ``torch.cuda.max_memory_allocated()``; TensorFlow: ``get_memory_info('GPU:0')['peak']``);
  None on CPU, where the peak RSS is the figure.

:func:`machine_facts` reads the host only: ``pclr bench`` itself never initialises a JAX backend
(which would take most of a GPU's memory); the device facts come from the children.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that matter here (AVX-512, bf16, AMX) the CPU reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def machine_facts() -> dict:
    """Host facts (CPU, cores, memory, load, versions); no JAX backend is initialised."""
    from importlib.metadata import version

    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "load_average_1min": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": version("jax"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarize(
    results: dict[str, dict], reference: str, peaks: dict[str, float] | None, dtype: str
) -> list[dict]:
    """One summary row per contender (module docstring), the reference first."""
    ref = results[reference]
    flops_per_ecg = (
        ref["flops_per_step"] / ref["ecgs_per_step"] if ref.get("flops_per_step") else None
    )
    peak = (peaks or {}).get(dtype)
    rows = []
    devices = max(1, ref.get("devices") or 1)
    for name, result in results.items():
        times = result["times"]
        median = statistics.median(times)
        ecg_per_s = result["ecgs_per_step"] / median
        if len(times) == len(ref["times"]) and result["ecgs_per_step"] == ref["ecgs_per_step"]:
            speedup = statistics.median(t / r for t, r in zip(times, ref["times"], strict=True))
        else:
            speedup = ref["ecgs_per_step"] / statistics.median(ref["times"]) / ecg_per_s
        gflops = flops_per_ecg * ecg_per_s / 1e9 if flops_per_ecg else None
        rows.append(
            {
                "contender": name,
                "framework": result.get("framework", ""),
                "n_params": result["n_params"],
                "ecgs_per_step": result["ecgs_per_step"],
                "median_step_s": median,
                "ecg_per_s": ecg_per_s,
                "speedup": speedup,
                "gflop_per_s": gflops,
                "peak_fraction": gflops / (peak * devices) if gflops and peak else None,
                "compile_s": result.get("compile_s", result["first_call_s"] - median),
                "first_call_s": result["first_call_s"],
                "maxrss_mib": result["maxrss_mib"],
                "device_peak_mib": result.get("device_peak_mib"),
                "device": result.get("device"),
            }
        )
    return rows


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / 1024


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| contender | framework | ECG/s | pclr-jax speed-up | GFLOP/s | of peak | "
        "peak RSS (GiB) | device peak (GiB) | compile (s) | median step (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['framework']} | {r['ecg_per_s']:.4g} | "
            f"{r['speedup']:.2f}x | {_fmt(r['gflop_per_s'], '.0f')} | "
            f"{_fmt(r['peak_fraction'], '.0%')} | "
            f"{r['maxrss_mib'] / 1024:.2f} | {_fmt(_gib(r['device_peak_mib']), '.2f')} | "
            f"{r['compile_s']:.1f} | {r['median_step_s']:.3g} |"
        )
    return "\n".join(lines)
