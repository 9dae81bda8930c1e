"""A prepared split held in accelerator memory; patient pairs gathered on the devices.

For splits that fit in the mesh's memory (PTB-XL: 21,837 x 4,096 x 12 float16 = 2.1 GB; MIMIC-IV-ECG
about 80 GB, 10 GB per GPU of an 8-GPU node), this replaces the host loader's per-step reading,
decoding and host-to-device copy, which a fast accelerator outruns (``docs/scaling.md``).

The split lies on the devices in its stored float16, each ECG lane-dense
(:mod:`pclr_jax.runtime.layout`), in one of two placements (:func:`load_split_to_devices`):

* ``'replicated'``: every device holds the whole split and gathers its own slots of each batch
  from it: no communication at all. Chosen by ``'auto'`` when the split takes at most
  :data:`REPLICATE_FRACTION` of the smallest device's memory (PTB-XL on any GPU or TPU).
* ``'sharded'``: each device holds ``N / devices`` consecutive rows; every process reads only the
  rows of its own devices. A batch's rows are then exchanged with ``all_to_all`` in *buckets*:
  the host knows every row's owner from the pair schedule, so it sorts the batch's ``2G``
  requests by (owner, destination) and each owner sends each destination at most ``capacity``
  rows per round (default twice the mean, ``ceil(4 b / devices)`` for ``b`` local pairs; a batch
  with a fuller bucket takes another round of the same program). Per device and round that is
  ``devices x capacity`` rows, about ``4 b``: it grows with the local batch, not the global one
  (the first version exchanged ``2 G`` rows per device per step, 0.8 GB at G = 4,096 on 8
  devices). Where ``devices > 4 b`` the one-row minimum per bucket makes it ``devices`` rows;
  ``lax.ragged_all_to_all`` would send exactly ``2 b`` but XLA:CPU cannot compile it, so it could
  not be tested here.

:class:`DeviceResidentPairLoader` yields global batches. The pairing is the host loader's,
literally: the same :class:`pclr_jax.data.pairing.PairSchedule` gives each batch's index rows
(``O(batch)`` integer work per step on the host, a few kB sent), so the batches are bit for bit
those of :func:`pclr_jax.data.loader.make_pair_loader` without augmentation (a selection: no
arithmetic touches the values). The views stay float16 and lane-dense; the training step casts
and reshapes them. The state is
the next batch number, ``{"next_index": j}`` as JSON bytes: the same content as the grain loader's
state, so a checkpoint resumes in either mode.

Augmentations run on the host (NumPy) and are not available here: asking for any (or for
``single_ecg_patients='augment'``, which needs them) is an error.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pclr_jax.data.loader import PairLoaderConfig, RecordReader
from pclr_jax.data.pairing import PairSchedule, build_patient_table
from pclr_jax.runtime.distributed import DATA_AXIS
from pclr_jax.runtime.layout import lane_dense_shape
from pclr_jax.runtime.storage import flags_of_all_processes

log = logging.getLogger(__name__)

PLACEMENTS = ("auto", "replicated", "sharded")
# 'auto' replicates a split taking at most this share of the smallest device's memory.
REPLICATE_FRACTION = 0.25


def choose_placement(split_bytes: int, device_bytes: int | None) -> str:
    """``'replicated'`` when ``split_bytes <= REPLICATE_FRACTION * device_bytes``, else
    ``'sharded'`` (also when the device memory is unknown, as on CPUs)."""
    if device_bytes is not None and split_bytes <= REPLICATE_FRACTION * device_bytes:
        return "replicated"
    return "sharded"


def split_bytes(prepared: Any) -> int:
    """The split's ECGs in float16 (as stored and held on the devices), bytes."""
    return 2 * len(prepared.index) * int(np.prod(np.shape(prepared.source[0]["ecg"])))


def default_capacity(local_pairs: int, devices: int) -> int:
    """Rows per (owner, destination) bucket and round: twice the mean, ``ceil(4 b / devices)``."""
    return max(1, math.ceil(4 * local_pairs / devices))


def device_memory_bytes(mesh: Mesh) -> int | None:
    """The smallest memory of this process's devices of ``mesh`` (``None`` when not reported)."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.local_devices]
    return None if None in limits else min(limits)


def load_split_to_devices(
    prepared: Any, mesh: Mesh, placement: str = "sharded", dtype: Any = np.float16
) -> jax.Array:
    """Every ECG of a prepared split on the mesh, lane-dense: ``(rows, *lane_dense_shape(samples,
    leads))`` in ``dtype``.

    Row ``i < N`` is ``prepared.source[i]['ecg']`` (checked against the index as the host loader
    checks it), reshaped. ``'replicated'``: ``N`` rows on every device (each process reads the
    whole split once). ``'sharded'``: ``P('data')``, rows padded with zeros to a multiple of the
    mesh size, each device holding ``rows / devices`` consecutive ones; each process reads only
    the rows of its addressable devices.
    """
    if placement not in ("replicated", "sharded"):
        raise ValueError(f"placement={placement!r}: expected 'replicated' or 'sharded'")
    reader = RecordReader(prepared)
    n_records = len(reader.record_ids)
    dense = lane_dense_shape(*reader.shape)
    if placement == "replicated":
        host = np.empty((n_records, *reader.shape), dtype)
        reader.read(np.arange(n_records), host)
        host = host.reshape(n_records, *dense)
        sharding = NamedSharding(mesh, P())
        return jax.make_array_from_callback(host.shape, sharding, host.__getitem__)
    n_padded = math.ceil(n_records / mesh.size) * mesh.size

    def read_shard(index: tuple[slice, ...]) -> np.ndarray:
        start, stop, _ = index[0].indices(n_padded)
        out = np.zeros((stop - start, *reader.shape), dtype)
        rows = np.arange(start, min(stop, n_records))
        reader.read(rows, out[: len(rows)])
        return out.reshape(stop - start, *dense)

    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.make_array_from_callback((n_padded, *dense), sharding, read_shard)


def requests(rows_a: np.ndarray, rows_b: np.ndarray, devices: int) -> np.ndarray:
    """The ``2 G`` rows each device needs, ``(devices, 2 b)``: its ``b`` view-a rows, then its
    ``b`` view-b rows (device ``d`` holds global slots ``d b .. (d + 1) b - 1``)."""
    local = len(rows_a) // devices
    return np.concatenate([rows_a.reshape(devices, local), rows_b.reshape(devices, local)], axis=1)


def exchange_rounds(
    needed: np.ndarray, rows_per_device: int, capacity: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bucketed exchange of one batch, round by round: ``[(send, place)]``.

    ``needed``: :func:`requests`' ``(devices, 2 b)`` split rows. Per round, ``send[o, d, j]`` is
    the local row (on owner ``o``) of the ``j``-th row ``o`` sends to ``d`` (0 where unused) and
    ``place[d, o, j]`` the slot of ``d``'s output where it lands (``2 b``, out of range, where
    unused); both ``(devices, devices, capacity)`` int32.
    """
    devices, slots = needed.shape
    rows = needed.ravel()
    dest = np.repeat(np.arange(devices), slots)
    slot = np.tile(np.arange(slots), devices)
    owner, local = np.divmod(rows, rows_per_device)
    bucket = owner * devices + dest
    order = np.argsort(bucket, kind="stable")
    first = np.searchsorted(bucket[order], bucket[order], side="left")
    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows)) - first
    rounds = []
    for r in range(int(rank.max()) // capacity + 1):
        now = rank // capacity == r
        send = np.zeros((devices, devices, capacity), np.int32)
        place = np.full((devices, devices, capacity), slots, np.int32)
        j = rank[now] % capacity
        send[owner[now], dest[now], j] = local[now]
        place[dest[now], owner[now], j] = slot[now]
        rounds.append((send, place))
    return rounds


@functools.cache
def make_local_gather(mesh: Mesh):
    """Jitted ``(ecgs, needed) -> (view_a, view_b)`` for a replicated split: each device takes
    its own ``2 b`` rows, no communication. ``needed``: ``(devices * 2 b,)`` int32 sharded
    ``P('data')`` (:func:`requests`, flattened); views ``(G, *lane_dense_shape)`` sharded
    ``P('data')``."""

    def gather(ecgs: jax.Array, needed: jax.Array):
        picked = jnp.take(ecgs, needed, axis=0)
        half = needed.shape[0] // 2
        return picked[:half], picked[half:]

    return jax.jit(
        jax.shard_map(
            gather,
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS)),
            out_specs=(P(DATA_AXIS), P(DATA_AXIS)),
        )
    )


@functools.cache
def make_exchange(mesh: Mesh, local_pairs: int, first: bool, last: bool):
    """Jitted round of the bucketed exchange for a sharded split (one program per flags).

    ``(shard_rows, send, place[, out]) -> out`` or, in the last round, ``-> (view_a, view_b)``:
    each device takes the rows ``send`` names from its shard, one ``all_to_all`` delivers each
    bucket to its destination, which writes the rows into its ``2 b`` output slots at ``place``
    (``out``, donated, holds the earlier rounds' rows; zeros in the first).
    """

    def exchange(shard: jax.Array, send: jax.Array, place: jax.Array, out: jax.Array | None):
        devices = lax.axis_size(DATA_AXIS)
        picked = jnp.take(shard, send[0].reshape(-1), axis=0)
        picked = picked.reshape(devices, -1, *shard.shape[1:])
        received = lax.all_to_all(picked, DATA_AXIS, split_axis=0, concat_axis=0)
        if out is None:
            out = jnp.zeros((2 * local_pairs, *shard.shape[1:]), shard.dtype)
        out = out.at[place[0].reshape(-1)].set(received.reshape(-1, *shard.shape[1:]), mode="drop")
        return (out[:local_pairs], out[local_pairs:]) if last else out

    sharded = P(DATA_AXIS)
    out_specs = (sharded, sharded) if last else sharded
    if first:
        body = lambda shard, send, place: exchange(shard, send, place, None)  # noqa: E731
        in_specs = (sharded,) * 3
        donate = ()
    else:
        body, in_specs, donate = exchange, (sharded,) * 4, (3,)
    return jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs),
        donate_argnums=donate,
    )


def _global_array(values: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``values`` (the same on every process) as a global array with ``sharding``."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


class DeviceResidentPairLoader(Iterator[dict[str, jax.Array]]):
    """Global batches of patient pairs gathered from a device-resident split.

    Yields ``view_a``, ``view_b`` ``(G, *lane_dense_shape(samples, leads))`` float16 mV and
    ``patient_id`` ``(G,)`` int32, sharded ``P('data')`` on ``mesh``: for the same split and
    ``config``, the global batch :func:`pclr_jax.data.loader.make_pair_loader` yields (all
    processes' slices concatenated), as :func:`pclr_jax.data.loader.to_global_batch` lays it out.

    Args:
        prepared: a prepared split (``.source``, ``.index``), see :mod:`pclr_jax.data.loader`.
        config: the pairing settings; ``read_threads``, ``prefetch_batches``, ``worker_count``
            and ``views_dtype`` do not apply (nothing is read per step). No augmentations.
        mesh: the devices, axis ``'data'``; ``batch_pairs`` must divide over them.
        placement: ``'auto'``, ``'replicated'`` or ``'sharded'`` (module docstring).
        capacity: rows per (owner, destination) bucket and round of the sharded exchange
            (default :func:`default_capacity`).
    """

    def __init__(
        self,
        prepared: Any,
        config: PairLoaderConfig,
        mesh: Mesh,
        placement: str = "auto",
        capacity: int | None = None,
    ):
        if config.augmentations.enabled:
            raise ValueError(
                "the device-resident loader has no augmentations (they run on the host); "
                f"switch off {list(config.augmentations.enabled)} or use the host loader"
            )
        if config.batch_pairs % mesh.size:
            raise ValueError(f"batch_pairs={config.batch_pairs} must divide over {mesh.size}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement={placement!r}: expected one of {PLACEMENTS}")
        table = build_patient_table(prepared.index, config.single_ecg_patients)
        log.info("patient pairing: %s", table.summary())
        self._schedule = PairSchedule(table, config.batch_pairs, config.seed, config.shuffle)
        if config.num_epochs is None:
            self._num_batches = sys.maxsize
        else:
            self._num_batches = config.num_epochs * table.n_pairable // config.batch_pairs
        if placement == "auto":
            fits = choose_placement(split_bytes(prepared), device_memory_bytes(mesh))
            fits = fits == "replicated"
            placement = "replicated" if flags_of_all_processes(fits).all() else "sharded"
        self.placement = placement
        self._mesh = mesh
        self._sharded = NamedSharding(mesh, P(DATA_AXIS))
        self._local_pairs = config.batch_pairs // mesh.size
        self.capacity = capacity or default_capacity(self._local_pairs, mesh.size)
        self.ecgs = load_split_to_devices(prepared, mesh, placement)
        self._next_index = 0

    def _gather(self, rows_a: np.ndarray, rows_b: np.ndarray) -> tuple[jax.Array, jax.Array]:
        needed = requests(rows_a, rows_b, self._mesh.size)
        if self.placement == "replicated":
            flat = _global_array(needed.ravel().astype(np.int32), self._sharded)
            return make_local_gather(self._mesh)(self.ecgs, flat)
        rows_per_device = self.ecgs.shape[0] // self._mesh.size
        rounds = exchange_rounds(needed, rows_per_device, self.capacity)
        out = None
        for r, (send, place) in enumerate(rounds):
            program = make_exchange(self._mesh, self._local_pairs, r == 0, r == len(rounds) - 1)
            args = [self.ecgs, _global_array(send, self._sharded)]
            args.append(_global_array(place, self._sharded))
            out = program(*args) if out is None else program(*args, out)
        return out

    def __next__(self) -> dict[str, jax.Array]:
        if self._next_index >= self._num_batches:
            raise StopIteration
        batch_pairs = self._schedule.batch_pairs
        start = self._next_index * batch_pairs
        pairs = self._schedule.at(np.arange(start, start + batch_pairs, dtype=np.int64))
        view_a, view_b = self._gather(pairs.rows_a, pairs.rows_b)
        self._next_index += 1
        patient_id = _global_array(pairs.patient_index.astype(np.int32), self._sharded)
        return {"view_a": view_a, "view_b": view_b, "patient_id": patient_id}

    def get_state(self) -> bytes:
        """``{"next_index": j}`` as JSON bytes: batch ``j`` comes next."""
        return json.dumps({"next_index": self._next_index}).encode()

    def set_state(self, state: bytes) -> None:
        self._next_index = int(json.loads(state)["next_index"])

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; nothing is read ahead."""

    def close(self) -> None:
        """Nothing to stop (for symmetry with the host feed)."""
