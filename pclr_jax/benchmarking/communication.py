"""Bytes a training step communicates: measured from the compiled program, and modelled by hand.

Two independent views of the same quantity, per device per step:

* :func:`collective_bytes` parses the HLO text of a compiled, sharded program (e.g.
  ``step.lower(state, batch).compile().as_text()`` for the step of
  :func:`pclr_jax.step.train_step.make_train_step`) and sums the collectives it finds, per kind
  (``all-reduce``, ``all-gather``, ``reduce-scatter``, ``all-to-all``, ``collective-permute``):
  how many run and their operand and result bytes. Collectives inside ``while`` loops count once
  per iteration when XLA knows the trip count.
* :func:`expected_bytes` derives the same numbers from the model configuration and the batch size,
  following what the step does (``docs/scaling.md`` explains every term):

  - forward, global batch norm: one ``pmean`` of the stacked batch mean and mean square per
    batch-norm layer, ``2 x channels`` float32 (flax's ``_compute_stats``);
  - the loss gathers both views' L2-normalised float32 projections, ``(b, d)`` each, from every
    device (``all-gather``); its transpose in the backward pass is a ``reduce-scatter`` of the
    ``(G, d)`` column cotangents (the gathered patient ids are unused by NT-Xent and removed);
  - backward: the transpose of every use of a replicated value by device-varying data is a
    ``psum``: the gradients of the convolution and dense kernels and biases and of the batch-norm
    biases; per batch-norm layer with global statistics, the cotangents of the (replicated)
    broadcast mean and of the factor ``scale * rsqrt(var + eps)`` replace the scale's gradient,
    which is then computed locally: ``channels`` values per layer more than its ``2 x channels``
    parameters. With per-device statistics the mean and factor vary per device and only the
    parameters' gradients are summed;
  - scalars: the global loss and the loss's metrics (``pmean``);
  - once per step, the step's ``lax.pmean`` of the running batch statistics (mean and variance,
    ``2 x channels`` per layer). With global batch norm these are already equal on every device,
    but ``pmean`` of a replicated value is still lowered to an all-reduce (``pvary`` + ``psum``),
    so the bytes are sent in both modes.

Byte conventions: an all-reduce's operand and result are the same size; an all-gather's result is
``devices`` times its operand, a reduce-scatter's operand ``devices`` times its result.
``ring_bytes`` is what each device SENDS with the bandwidth-optimal ring algorithms: ``2 (N-1)/N``
of an all-reduce's size, ``(N-1)/N`` of an all-gather's result or a reduce-scatter's operand.
XLA combines small all-reduces into tuple-shaped ones (changing counts, not bytes): compare bytes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from pclr_jax.model import batch_norm
from pclr_jax.model.encoder import EncoderConfig

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# Bytes per element of HLO primitive types (sub-byte types round up to whole bytes per element).
DTYPE_BYTES = {
    "pred": 1,
    "s2": 1,
    "u2": 1,
    "s4": 1,
    "u4": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_CALLS = re.compile(
    r"\b(calls|body|condition|to_apply|true_computation|false_computation|branch_computations)"
    r"=(\{[^}]*\}|%?[\w.\-]+)"
)
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,\s]*\}(?:\s*,\s*\{[\d,\s]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction of a compiled program.

    ``operand_bytes`` and ``result_bytes`` are for one execution on one device; ``executions`` is
    how many times it runs per call of the program (loop trip counts multiplied in);
    ``group_size`` is the number of devices in its replica group (None when not stated).
    """

    kind: str
    name: str
    computation: str
    operand_bytes: int
    result_bytes: int
    dtypes: tuple[str, ...]
    group_size: int | None
    executions: int
    op_name: str


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string, e.g. ``f32[2,8]{1,0}`` or a tuple ``(f32[3], bf16[4,4])``."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            if dtype.startswith("f8") or dtype.startswith("f4"):
                size = 1
            else:
                continue  # token[], opaque: no data
        else:
            size = DTYPE_BYTES[dtype]
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _split_shape(rest: str) -> tuple[str, str]:
    """``'(f32[2], f32[3]) all-reduce(...)'`` -> (the shape, the rest after it)."""
    rest = rest.lstrip()
    if rest.startswith("("):
        depth = 0
        for i, char in enumerate(rest):
            depth += char == "("
            depth -= char == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :]
    shape, _, tail = rest.partition(" ")
    return shape, tail


def _parse_module(hlo_text: str) -> tuple[dict[str, list[dict]], str | None]:
    """Computations of an HLO module text: name -> instructions (name, shape, opcode, line)."""
    computations: dict[str, list[dict]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match and "=" not in line.split("{")[0].split("(")[0]:
                current = match.group(2)
                computations[current] = []
                if match.group(1):
                    entry = current
            continue
        if line.strip() == "}":
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        shape, tail = _split_shape(match.group(2))
        opcode_match = re.match(r"\s*([\w\-]+)\(", tail)
        if opcode_match is None:
            continue
        operands = tail[opcode_match.end() :]
        computations[current].append(
            {
                "name": match.group(1),
                "shape": shape,
                "opcode": opcode_match.group(1),
                "operands": re.findall(r"%([\w.\-]+)", operands.split(")")[0]),
                "line": line,
            }
        )
    return computations, entry


def _group_size(line: str) -> int | None:
    match = _GROUPS_IOTA.search(line)
    if match:
        return int(match.group(2))
    match = _GROUPS_LIST.search(line)
    if match:
        first = match.group(1).split("}")[0].strip("{ ")
        return len([d for d in first.split(",") if d.strip()])
    return None


def _callees(line: str) -> list[tuple[str, int]]:
    """Computations an instruction calls, with how often each runs per execution of it."""
    trip = _TRIP_COUNT.search(line)
    result = []
    for attribute, value in _CALLS.findall(line):
        names = re.findall(r"%?([\w.\-]+)", value.strip("{}"))
        times = int(trip.group(1)) if attribute == "body" and trip else 1
        result.extend((name, times) for name in names)
    return result


def parse_collectives(hlo_text: str) -> list[Collective]:
    """Every collective of a compiled HLO module reachable from its entry computation.

    Asynchronous pairs (``all-gather-start``/``-done``, ...) count once, with the result size of
    the ``-done`` instruction. Collectives in ``while`` bodies are multiplied by XLA's
    ``known_trip_count`` (1 when it is not known).
    """
    computations, entry = _parse_module(hlo_text)
    if entry is None:
        raise ValueError("no ENTRY computation found: pass the text of a compiled HLO module")
    shapes = {i["name"]: i["shape"] for insts in computations.values() for i in insts}
    done_shapes = {
        i["operands"][0]: i["shape"]
        for insts in computations.values()
        for i in insts
        if i["opcode"].endswith("-done") and i["operands"]
    }
    executions: dict[str, int] = {}

    def visit(name: str, times: int) -> None:
        executions[name] = executions.get(name, 0) + times
        for inst in computations.get(name, []):
            if inst["opcode"].endswith(("-done", "-update")):
                continue  # names the computation its -start already ran
            for callee, factor in _callees(inst["line"]):
                if callee in computations:
                    visit(callee, times * factor)

    visit(entry, 1)
    found = []
    for computation, times in executions.items():
        for inst in computations[computation]:
            opcode = inst["opcode"]
            kind = opcode.removesuffix("-start")
            if kind not in KINDS:
                continue
            result_shape = done_shapes.get(inst["name"], inst["shape"])
            operand_bytes = sum(shape_bytes(shapes.get(o, "")) for o in inst["operands"])
            op_name = re.search(r'op_name="([^"]*)"', inst["line"])
            found.append(
                Collective(
                    kind=kind,
                    name=inst["name"],
                    computation=computation,
                    operand_bytes=operand_bytes,
                    result_bytes=shape_bytes(result_shape),
                    dtypes=tuple(sorted({d for d, _ in _ARRAY.findall(result_shape)})),
                    group_size=_group_size(inst["line"]),
                    executions=times,
                    op_name=op_name.group(1) if op_name else "",
                )
            )
    return found


def ring_bytes(kind: str, operand_bytes: float, result_bytes: float, devices: int) -> float:
    """Bytes one device sends for one collective under the bandwidth-optimal ring algorithm."""
    if devices <= 1:
        return 0.0
    share = (devices - 1) / devices
    if kind == "all-reduce":
        return 2 * share * operand_bytes
    if kind == "all-gather":
        return share * result_bytes
    if kind in ("reduce-scatter", "all-to-all"):
        return share * operand_bytes
    return float(operand_bytes)  # collective-permute: one send


def collective_bytes(compiled_or_hlo_text: Any) -> dict[str, dict[str, float]]:
    """Per collective kind: ``count``, ``operand_bytes``, ``result_bytes``, ``ring_bytes``.

    Args:
      compiled_or_hlo_text: a compiled program (anything with ``as_text()``, e.g.
        ``jitted.lower(*args).compile()``) or its HLO text.

    Returns:
      ``{kind: {...}}`` for every kind of :data:`KINDS` (zeros when absent), per device per call:
      ``count`` is the number of collective executions (after XLA's combining passes),
      the byte sums are over executions.
    """
    text = (
        compiled_or_hlo_text
        if isinstance(compiled_or_hlo_text, str)
        else compiled_or_hlo_text.as_text()
    )
    totals = {k: dict(count=0, operand_bytes=0, result_bytes=0, ring_bytes=0.0) for k in KINDS}
    for c in parse_collectives(text):
        entry = totals[c.kind]
        entry["count"] += c.executions
        entry["operand_bytes"] += c.executions * c.operand_bytes
        entry["result_bytes"] += c.executions * c.result_bytes
        entry["ring_bytes"] += c.executions * ring_bytes(
            c.kind, c.operand_bytes, c.result_bytes, c.group_size or 1
        )
    return totals


def compiled_step_hlo(
    config: EncoderConfig, mesh: Any, global_pairs: int, sync_batch_norm: bool = True
) -> str:
    """HLO text of the real sharded NT-Xent train step (Adam) compiled for ``mesh`` and a global
    batch of ``global_pairs`` pairs, from abstract inputs: nothing is allocated or run. The
    optimizer (``fixed_adam_config``) does not change what is communicated: its update runs on
    the all-reduced, replicated gradients."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from pclr_jax.losses import get_loss
    from pclr_jax.step.optimizers import fixed_adam_config, make_optimizer
    from pclr_jax.step.train_state import create_train_state
    from pclr_jax.step.train_step import make_train_step

    optimizer, _ = make_optimizer(fixed_adam_config(), global_pairs, total_steps=10)
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.eval_shape(
        lambda: create_train_state(config, get_loss("ntxent"), optimizer, jax.random.key(0), mesh)
    )
    state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), state
    )
    view = jax.ShapeDtypeStruct(
        (global_pairs, config.n_samples, config.n_leads), jnp.float32, sharding=rows
    )
    batch = {
        "view_a": view,
        "view_b": view,
        "patient_id": jax.ShapeDtypeStruct((global_pairs,), jnp.int32, sharding=rows),
    }
    step = make_train_step(
        config, get_loss("ntxent"), optimizer, mesh, sync_batch_norm=sync_batch_norm
    )
    return step.lower(state, batch).compile().as_text()


def batch_norm_channels(config: EncoderConfig) -> list[int]:
    """Channels of every batch-norm layer of the encoder, in order (stem, then two per unit)."""
    stem = [config.stem_filters] if config.stem_batch_norm else []
    return stem + [f for f in config.unit_filters for _ in range(2)]


def parameter_count(config: EncoderConfig) -> int:
    """Trainable parameters of ``PCLRModel(config)`` (encoder and head; no batch statistics)."""
    k, total, width = config.kernel_size, 0, config.stem_filters
    total += k * config.n_leads * width
    total += 2 * width if config.stem_batch_norm else 0
    for filters in config.unit_filters:
        if width != filters:
            total += width * filters  # 1x1 skip convolution
        total += k * width * filters + k * filters * filters + 4 * filters  # 2 convs, 2 BNs
        width = filters
    for size in config.head_sizes:
        total += width * size + size
        width = size
    return total


def expected_bytes(
    config: EncoderConfig,
    batch_pairs_per_device: int,
    n_devices: int,
    sync_batch_norm: bool = True,
    n_loss_metrics: int = 1,
) -> dict[str, Any]:
    """The analytic model of the step's collectives (NT-Xent, direct step), per device per step.

    Args:
      config: the model (any ``dtype``: what is communicated is float32 either way, see
        ``docs/scaling.md``).
      batch_pairs_per_device: ``b``, pairs per device (the global batch is ``G = b x n_devices``).
      n_devices: devices on the ``'data'`` axis (the model is for ``n_devices > 1``; tested with
        4 and 8).
      sync_batch_norm: as in :func:`pclr_jax.step.train_step.make_train_step`.
      n_loss_metrics: float32 scalar metrics the loss returns (1 for NT-Xent).

    The batch-norm backward term depends on ``config.norm_impl`` (resolved for this process's
    backend): ``flax``'s ``nn.BatchNorm`` sums the cotangents of the replicated mean and scale
    factor (one value per channel beyond the parameters); ``fused`` normalises with a replicated
    scale and shift whose cotangents replace those of the batch-norm parameters (none beyond).
    The space-to-depth convolutions (``conv_impl``) communicate what ``xla`` does when the kernel
    size is a multiple of every stride, as in the released models; otherwise their kernel
    cotangents are padded to one and this model undercounts.

    Returns:
      ``{'terms': {name: {'kind', 'operand_bytes', 'result_bytes'}}, 'totals': {kind: {...}}}``
      with the same byte conventions as :func:`collective_bytes` (``totals`` has no ``count``:
      XLA decides how many instructions carry these bytes).
    """
    f32 = 4
    b, n = batch_pairs_per_device, n_devices
    d = config.head_sizes[-1] if config.head_sizes else config.embed_dim
    channels = batch_norm_channels(config)
    bn_channels = sum(channels)

    def all_reduce(size: int) -> dict[str, Any]:
        return dict(kind="all-reduce", operand_bytes=size, result_bytes=size)

    terms = {
        "gradients": all_reduce(f32 * parameter_count(config)),
        "scalars (global loss, loss metrics)": all_reduce(f32 * (1 + n_loss_metrics)),
        "projections (all-gather, 2 views)": dict(
            kind="all-gather", operand_bytes=f32 * 2 * b * d, result_bytes=f32 * 2 * b * n * d
        ),
        "projection cotangents (reduce-scatter, 2 views)": dict(
            kind="reduce-scatter", operand_bytes=f32 * 2 * b * n * d, result_bytes=f32 * 2 * b * d
        ),
    }
    if sync_batch_norm:
        terms["batch-norm statistics, forward (mean, mean square)"] = all_reduce(
            f32 * 2 * bn_channels
        )
        if batch_norm.resolve_impl(config.norm_impl) == "flax":
            name = "batch-norm backward (mean and factor cotangents, less the scale)"
            terms[name] = all_reduce(f32 * bn_channels)
    terms["running batch statistics (mean, var)"] = all_reduce(f32 * 2 * bn_channels)
    totals = {k: dict(operand_bytes=0, result_bytes=0, ring_bytes=0.0) for k in KINDS}
    for term in terms.values():
        entry = totals[term["kind"]]
        entry["operand_bytes"] += term["operand_bytes"]
        entry["result_bytes"] += term["result_bytes"]
        entry["ring_bytes"] += ring_bytes(
            term["kind"], term["operand_bytes"], term["result_bytes"], n
        )
    return {"terms": terms, "totals": totals}


def format_table(measured: Mapping[str, Mapping[str, float]], expected: Mapping[str, Any]) -> str:
    """A Markdown table of measured (:func:`collective_bytes`) against expected bytes per kind."""
    rows = [
        "| collective | count | measured operand B | model operand B "
        "| measured result B | model result B |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        m, e = measured[kind], expected["totals"][kind]
        if not (m["count"] or e["operand_bytes"]):
            continue
        rows.append(
            f"| {kind} | {m['count']} | {m['operand_bytes']:,} | {e['operand_bytes']:,} "
            f"| {m['result_bytes']:,} | {e['result_bytes']:,} |"
        )
    return "\n".join(rows)
