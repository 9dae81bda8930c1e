"""The accelerator check's summary on disk: written whole after every event, and as Markdown.

:func:`write_atomic` writes a temporary file beside the target and renames it over the target
(``os.replace``, atomic on POSIX), so a reader (or a machine taken away mid-run) always finds the
previous complete summary or the new one, never a half-written file. :func:`with_fractions`
adds a row's fractions of peak; :func:`markdown` renders the summary
(:mod:`pclr_jax.benchmarking.accelerator_check` describes its fields).
"""

from __future__ import annotations

import os
import pathlib


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Replaces ``path`` with ``text`` in one rename (module docstring)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def with_fractions(row: dict, measured_peaks: dict, published_tflops: float | None) -> dict:
    """``row`` plus ``of_published_bf16_peak`` (its GFLOP/s over the device's published dense
    bf16 peak) and ``of_measured_xla_peak`` (over XLA's measured matrix-product peak of the
    row's dtype); None where a figure is missing."""
    gflops = row.get("gflop_per_s")
    measured = measured_peaks.get(row.get("dtype"))
    return {
        **row,
        "of_published_bf16_peak": gflops / (published_tflops * 1e3)
        if gflops and published_tflops
        else None,
        "of_measured_xla_peak": gflops / measured if gflops and measured else None,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _device_lines(summary: dict) -> list[str]:
    device = summary.get("device") or {}
    if not device:
        return ["Device: no result (see the stages below)."]
    peaks = device.get("peaks", {})
    return [
        f"Device: {device.get('device_count')} x {device.get('device_kind')} "
        f"({device.get('platform')}), JAX {device.get('jax')}, "
        f"{_fmt(device.get('memory_gib'), '.1f')} GiB available to one device. Published dense "
        f"bf16 peak: {_fmt(summary.get('published_bf16_tflops'), '.0f')} TFLOP/s; XLA's "
        f"measured matmul peak on one device: fp32 {_fmt(peaks.get('fp32'), '.0f')}, bf16 "
        f"{_fmt(peaks.get('bf16'), '.0f')} GFLOP/s."
    ]


def _test_lines(tests: dict) -> list[str]:
    if "tests" not in tests:
        return ["Tests on the device: no result (see the stages below)."]
    ran_on = tests.get("ran_on") or {}
    lines = [
        f"Tests on the device (pytest -m device_check, {', '.join(tests['selection'])}): ran on "
        f"{ran_on.get('jax_platform', '?')} x {ran_on.get('device_count', '?')}; "
        f"{tests['tests']} run, {tests['failures'] + tests['errors']} failed, "
        f"{tests['skipped']} skipped."
    ]
    lines += [f"- FAILED {name}" for name in tests.get("failed", [])]
    lines += [f"- skipped {name}: {why}" for name, why in tests.get("skipped_reasons", {}).items()]
    return lines


def _row_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| workload | dtype | ECGs per call | ECG/s | GFLOP/s | of bf16 peak | of XLA peak | "
        "device peak (GiB) | compile (s) | finite |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['dtype']} | {r['ecgs']} | {r['ecg_per_s']:.4g} | "
            f"{_fmt(r['gflop_per_s'], '.0f')} | {_fmt(r['of_published_bf16_peak'], '.1%')} | "
            f"{_fmt(r['of_measured_xla_peak'], '.0%')} | {_fmt(r['device_peak_gib'], '.2f')} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {r.get('finite')} |"
        )
    return lines


def _conv_lines(conv: dict) -> list[str]:
    choice = conv.get("choice")
    if not choice:
        return []
    lines = [
        "",
        f"Convolution formulations on {conv['backend']} ({', '.join(choice['dtypes'])}), time "
        "relative to xla (lower is faster):",
    ]
    for mode in ("training", "inference"):
        relative = ", ".join(f"{k} {v:.3f}" for k, v in choice["relative"].get(mode, {}).items())
        lines.append(f"- {mode}: {relative}; choice: {choice[mode]}")
    lines.append(
        f"- AUTO_IMPL[{conv['backend']!r}] in pclr_jax/model/conv.py is {tuple(conv['table'])}; "
        f"these timings call for {(choice['training'], choice['inference'])}."
    )
    return lines


def markdown(summary: dict) -> str:
    """The summary as a Markdown page (what ``accelerator_check.md`` holds)."""
    host = summary["host"]
    state = "complete" if summary.get("complete") else "INCOMPLETE (stopped or still running)"
    lines = [
        "# pclr-jax accelerator check",
        "",
        f"{summary['date_utc']}, {'TINY sizes (a test run)' if summary['tiny'] else 'full sizes'}"
        f", {state}, {summary['seconds']:.0f} s; host {host['cpu_model']}, {host['cores']} "
        "cores.",
        "",
        *_device_lines(summary),
        "",
        *_test_lines(summary.get("tests") or {}),
        "",
    ]
    for dtype, fit in summary.get("largest_batch", {}).items():
        lines.append(
            f"Largest training batch on one device, {dtype}: {fit['pairs']} pairs (XLA plans "
            f"{fit['planned_gib']:.2f} of {fit['available_gib']:.1f} GiB available; "
            f"{fit['fixed_gib']:.2f} GiB + {fit['per_pair_gib'] * 1024:.1f} MiB per pair; "
            f"compiled {fit['probes']})."
        )
    lines += ["", *_row_lines(summary.get("rows", []))]
    lines += _conv_lines(summary.get("conv_formulations") or {})
    if summary.get("peer_rows"):
        lines += ["", "PyTorch on the same device (pclr bench --vs torch):", ""]
        lines += [
            f"- {r['workload']} {r['dtype']}: {r['contender']} {r['ecg_per_s']:.4g} ECG/s"
            for r in summary["peer_rows"]
        ]
    lines += [
        "",
        "| stage | status | seconds | estimate (s) | compiles | compile (s) | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, stage in summary["stages"].items():
        note = (stage.get("reason") or stage.get("error") or "").replace("\n", " ")[:200]
        lines.append(
            f"| {name} | {stage['status']} | {_fmt(stage.get('seconds'), '.1f')} | "
            f"{stage['estimate_s']:.0f} | {_fmt(stage.get('compiles'), 'd')} | "
            f"{_fmt(stage.get('compile_s'), '.1f')} | {note} |"
        )
    return "\n".join(lines) + "\n"
