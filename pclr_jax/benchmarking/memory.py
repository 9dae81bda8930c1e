"""Will a compiled program fit, and how much device memory did a run use.

XLA plans every buffer of a compiled program before it runs: ``Compiled.memory_analysis()`` gives
the bytes of its arguments, outputs and temporaries, per device. :func:`planned_bytes` adds them
up (less the outputs that reuse donated arguments), and :func:`check_fits` compares that with the
memory available to one device, so ``pclr bench`` refuses a batch beyond memory before
allocating anything, instead of dying with ``RESOURCE_EXHAUSTED`` (or the host's OOM killer)
after a long compile.

Available memory: on an accelerator, the allocator's limit minus what is in use
(``memory_stats()['bytes_limit'] - ['bytes_in_use']``); on CPU, ``MemAvailable`` of
``/proc/meminfo`` (the host's free memory plus what the kernel can reclaim). A caller may pass a
smaller limit instead (``pclr bench --memory-limit-gib``: to leave room for peers, or to test).
"""

from __future__ import annotations

from typing import Any

GIB = 2**30


class DoesNotFit(RuntimeError):
    """The planned memory of a program exceeds what the device has available."""


def planned_bytes(compiled: Any) -> int:
    """Bytes one device needs to run ``compiled`` (a ``jax.stages.Compiled``): arguments +
    outputs + temporaries + generated code, less the outputs aliased to donated arguments."""
    stats = compiled.memory_analysis()
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
        - stats.alias_size_in_bytes
    )


def host_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def available_bytes(device: Any) -> int | None:
    """Memory one JAX ``device`` can still allocate (module docstring); None if unknown."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return host_available_bytes()


def check_fits(compiled: Any, device: Any, limit_gib: float | None, remedy: str) -> dict:
    """Raises :class:`DoesNotFit` naming ``remedy`` if ``compiled`` plans more bytes than
    ``limit_gib`` (when given) or than ``device`` has available; returns both figures in GiB."""
    planned = planned_bytes(compiled)
    available = limit_gib * GIB if limit_gib else available_bytes(device)
    facts = {
        "planned_gib": planned / GIB,
        "available_gib": None if available is None else available / GIB,
    }
    if available is not None and planned > available:
        where = "the --memory-limit-gib" if limit_gib else f"{device.platform} memory available"
        raise DoesNotFit(
            f"the compiled program needs {planned / GIB:.2f} GiB per device (XLA's memory "
            f"analysis) but {where} is {available / GIB:.2f} GiB: not run. {remedy}"
        )
    return facts


def device_peak_mib(devices: Any) -> float | None:
    """The largest ``peak_bytes_in_use`` of ``devices`` in MiB (accelerators); None on CPU,
    whose devices report no memory statistics (read the process's peak RSS there)."""
    peaks = [
        (device.memory_stats() or {}).get("peak_bytes_in_use")
        for device in devices
        if device.platform != "cpu"
    ]
    peaks = [peak for peak in peaks if peak is not None]
    return max(peaks) / 2**20 if peaks else None
