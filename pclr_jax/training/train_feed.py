"""Where the training loop's global batches come from: ``config.loader.mode``.

* ``'auto'`` (default): one of the two below, by :func:`pclr_jax.training.feed_choice.choose_feed`
  (device-resident on an accelerator where the split fits, else the host feed), the same choice
  on every process.

* ``'host'`` (default): the grain pair loader (:func:`pclr_jax.data.loader.make_pair_loader`)
  reads each host's slice of every batch; :class:`pclr_jax.data.device_prefetch.DevicePrefetcher`
  places the next ``loader.device_prefetch`` global batches on the devices while the step runs,
  in ``loader.views_dtype`` (float16 by default: the stored dtype; the step casts it).
* ``'device_resident'``: the whole training split lives in accelerator memory and the pairs are
  gathered there (:class:`pclr_jax.data.device_resident.DeviceResidentPairLoader`), replicated on
  every device or sharded over them (``loader.device_resident_placement``); the same batches as
  the host loader, without augmentations.

Both feeds checkpoint the number of batches consumed, in the same format.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from pclr_jax.data.device_prefetch import DevicePrefetcher
from pclr_jax.data.device_resident import (
    DeviceResidentPairLoader,
    device_memory_bytes,
    split_bytes,
)
from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch
from pclr_jax.runtime.storage import flags_of_all_processes
from pclr_jax.training.feed_choice import choose_feed, host_cores

FEED_MODES = ("auto", "host", "device_resident")

log = logging.getLogger(__name__)


def pair_loader_config(
    config: ml_collections.ConfigDict, worker_count: int | None = None
) -> PairLoaderConfig:
    """The pairing and reading settings of a run config (``batch_pairs``, ``seed``, ``loader``);
    ``worker_count`` replaces ``loader.worker_count`` (which may be -1: by the rule)."""
    loader = config.loader
    return PairLoaderConfig(
        batch_pairs=config.batch_pairs,
        seed=config.seed,
        single_ecg_patients=loader.single_ecg_patients,
        augmentations=loader.augment.to_dict(),
        worker_count=loader.worker_count if worker_count is None else worker_count,
        read_threads=loader.read_threads,
        prefetch_batches=loader.prefetch_batches,
        views_dtype=loader.views_dtype,
    )


def make_train_feed(config: ml_collections.ConfigDict, split: Any, mesh: Mesh):
    """An iterator of global device batches (``view_a``, ``view_b``, ``patient_id``).

    It has ``get_state() -> bytes`` / ``set_state(bytes)`` (stored by
    :mod:`pclr_jax.training.checkpointing`) and ``close()``.
    """
    mode, loader = config.loader.mode, config.loader
    if mode not in FEED_MODES:
        raise ValueError(f"loader.mode={mode!r}: expected one of {FEED_MODES}")
    choice = choose_feed(
        jax.default_backend(),
        split_bytes(split),
        mesh.size,
        device_memory_bytes(mesh),
        bool(pair_loader_config(config, worker_count=0).augmentations.enabled),
        host_cores(),
    )
    if mode == "auto":
        resident = flags_of_all_processes(choice.mode == "device_resident").all()
        mode = "device_resident" if resident else "host"
        if jax.process_index() == 0:
            log.warning("loader.mode='auto': the %s feed (%s)", mode, choice.reason)
    if mode == "host":
        workers = choice.worker_count if loader.worker_count < 0 else loader.worker_count
        pairs = make_pair_loader(
            split, pair_loader_config(config, workers), jax.process_index(), jax.process_count()
        )
        place = functools.partial(to_global_batch, mesh=mesh)
        return DevicePrefetcher(pairs, place, loader.device_prefetch)
    pairing = pair_loader_config(config, worker_count=0)
    return DeviceResidentPairLoader(split, pairing, mesh, loader.device_resident_placement)
