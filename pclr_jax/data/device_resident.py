"""A prepared split held in accelerator memory; patient pairs gathered on the devices.

For splits that fit in the mesh's memory (PTB-XL: 21,837 x 4,096 x 12 float16 = 2.1 GB; MIMIC-IV-ECG
about 80 GB, 10 GB per GPU of an 8-GPU node), this replaces the host loader's per-step reading,
decoding and host-to-device copy, which a fast accelerator outruns (``docs/scaling.md``):

* :func:`load_split_to_devices` reads the split once, in its stored float16, into one array
  ``(N_padded, samples, leads)`` sharded over the mesh's ``'data'`` axis by rows; every process
  reads only the rows of its own devices.
* :class:`DeviceResidentPairLoader` yields global batches. The pairing is the host loader's,
  literally: the same :class:`pclr_jax.data.pairing.PairSchedule` gives each batch's index rows
  (``O(batch)`` integer work per step on the host, a few kB sent), so the batches are bit for bit
  those of :func:`pclr_jax.data.loader.make_pair_loader` without augmentation. The devices gather
  the rows: each device takes the rows of the global batch it owns (zeros elsewhere), an
  ``all_to_all`` over ``'data'`` sends every device the picks for its slice, each slot keeps its
  owner's row (a selection: no arithmetic touches the values); the views stay float16 (the
  training step casts them). Per step the mesh moves one global batch of float16 (over NVLink /
  ICI), and each device holds about ``2 x 2 x G x samples x leads`` float16 of exchange buffers
  for ``G`` global pairs.
* The state is the next batch number, ``{"next_index": j}`` as JSON bytes: the same content as the
  grain loader's state, so a checkpoint resumes in either mode.

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

log = logging.getLogger(__name__)


def load_split_to_devices(prepared: Any, mesh: Mesh, dtype: Any = np.float16) -> jax.Array:
    """Every ECG of a prepared split on the mesh: ``(N_padded, samples, leads)`` in ``dtype``.

    Row ``i < N`` is ``prepared.source[i]['ecg']`` (checked against the index as the host loader
    checks it); rows ``N .. N_padded - 1`` are zeros, padding ``N`` to a multiple of the mesh
    size. Sharded ``P('data')``: each device holds ``N_padded / devices`` consecutive rows, and
    each process reads only the rows of its addressable devices.
    """
    reader = RecordReader(prepared)
    n_records = len(reader.record_ids)
    n_padded = math.ceil(n_records / mesh.size) * mesh.size
    shape = (n_padded, *reader.shape)

    def read_shard(index: tuple[slice, ...]) -> np.ndarray:
        start, stop, _ = index[0].indices(n_padded)
        out = np.zeros((stop - start, *reader.shape), dtype)
        rows = np.arange(start, min(stop, n_records))
        reader.read(rows, out[: len(rows)])
        return out

    return jax.make_array_from_callback(shape, NamedSharding(mesh, P(DATA_AXIS)), read_shard)


@functools.cache
def make_pair_gather(mesh: Mesh):
    """Jitted ``(ecgs, rows_a, rows_b) -> (view_a, view_b)`` on ``mesh``.

    ``ecgs``: :func:`load_split_to_devices`'s array; ``rows_a``, ``rows_b``: ``(G,)`` int32 index
    rows, replicated; views ``(G, samples, leads)`` float16 sharded ``P('data')`` (row ``i`` is
    ``ecgs[rows[i]]``, exactly; the training step casts them). One compiled function per mesh
    (cached).
    """

    def local_gather(shard: jax.Array, rows_a: jax.Array, rows_b: jax.Array):
        rows_per_device = shard.shape[0]
        devices = lax.axis_size(DATA_AXIS)
        me = lax.axis_index(DATA_AXIS)

        def gather(rows: jax.Array) -> jax.Array:
            local = rows - me * rows_per_device
            owned = (local >= 0) & (local < rows_per_device)
            picked = jnp.take(shard, jnp.clip(local, 0, rows_per_device - 1), axis=0)
            picked = jnp.where(owned[:, None, None], picked, jnp.zeros((), shard.dtype))
            # Slot k of the global batch goes to device k // per_device; after the exchange,
            # received[j] holds device j's picks for this device's slots: keep each slot's owner's.
            per_device = rows.shape[0] // devices
            picked = picked.reshape(devices, per_device, *shard.shape[1:])
            received = lax.all_to_all(picked, DATA_AXIS, split_axis=0, concat_axis=0)
            mine = lax.dynamic_slice_in_dim(rows, me * per_device, per_device)
            owner = mine // rows_per_device
            return received[owner, jnp.arange(per_device)]

        return gather(rows_a), gather(rows_b)

    return jax.jit(
        jax.shard_map(
            local_gather,
            mesh=mesh,
            in_specs=(P(DATA_AXIS), P(), P()),
            out_specs=(P(DATA_AXIS), P(DATA_AXIS)),
        )
    )


def _global_array(values: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``values`` (the same on every process) as a global array with ``sharding``."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


class DeviceResidentPairLoader(Iterator[dict[str, jax.Array]]):
    """Global batches of patient pairs gathered from a device-resident split.

    Yields ``view_a``, ``view_b`` ``(G, samples, leads)`` float16 mV and ``patient_id`` ``(G,)``
    int32, sharded ``P('data')`` on ``mesh``: for the same split and ``config``, the global batch
    :func:`pclr_jax.data.loader.make_pair_loader` yields (all processes' slices concatenated).

    Args:
        prepared: a prepared split (``.source``, ``.index``), see :mod:`pclr_jax.data.loader`.
        config: the pairing settings; ``read_threads``, ``prefetch_batches``, ``worker_count``
            and ``views_dtype`` do not apply (nothing is read per step). No augmentations.
        mesh: the devices, axis ``'data'``; ``batch_pairs`` must divide over them.
    """

    def __init__(self, prepared: Any, config: PairLoaderConfig, mesh: Mesh):
        if config.augmentations.enabled:
            raise ValueError(
                "the device-resident loader has no augmentations (they run on the host); "
                f"switch off {list(config.augmentations.enabled)} or use the host loader"
            )
        if config.batch_pairs % mesh.size:
            raise ValueError(f"batch_pairs={config.batch_pairs} must divide over {mesh.size}")
        table = build_patient_table(prepared.index, config.single_ecg_patients)
        log.info("patient pairing: %s", table.summary())
        self._schedule = PairSchedule(table, config.batch_pairs, config.seed, config.shuffle)
        if config.num_epochs is None:
            self._num_batches = sys.maxsize
        else:
            self._num_batches = config.num_epochs * table.n_pairable // config.batch_pairs
        self._replicated = NamedSharding(mesh, P())
        self._sharded = NamedSharding(mesh, P(DATA_AXIS))
        self.ecgs = load_split_to_devices(prepared, mesh)
        self._gather = make_pair_gather(mesh)
        self._next_index = 0

    def __next__(self) -> dict[str, jax.Array]:
        if self._next_index >= self._num_batches:
            raise StopIteration
        batch_pairs = self._schedule.batch_pairs
        start = self._next_index * batch_pairs
        pairs = self._schedule.at(np.arange(start, start + batch_pairs, dtype=np.int64))
        view_a, view_b = self._gather(
            self.ecgs,
            _global_array(pairs.rows_a.astype(np.int32), self._replicated),
            _global_array(pairs.rows_b.astype(np.int32), self._replicated),
        )
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
