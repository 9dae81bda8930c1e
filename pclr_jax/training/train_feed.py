"""Where the training loop's global batches come from: ``config.loader.mode``.

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
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from pclr_jax.data.device_prefetch import DevicePrefetcher
from pclr_jax.data.device_resident import DeviceResidentPairLoader
from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch

FEED_MODES = ("host", "device_resident")


def pair_loader_config(config: ml_collections.ConfigDict) -> PairLoaderConfig:
    """The pairing and reading settings of a run config (``batch_pairs``, ``seed``, ``loader``)."""
    loader = config.loader
    return PairLoaderConfig(
        batch_pairs=config.batch_pairs,
        seed=config.seed,
        single_ecg_patients=loader.single_ecg_patients,
        augmentations=loader.augment.to_dict(),
        worker_count=loader.worker_count,
        read_threads=loader.read_threads,
        prefetch_batches=loader.prefetch_batches,
        views_dtype=loader.views_dtype,
    )


def make_train_feed(config: ml_collections.ConfigDict, split: Any, mesh: Mesh):
    """An iterator of global device batches (``view_a``, ``view_b``, ``patient_id``).

    It has ``get_state() -> bytes`` / ``set_state(bytes)`` (stored by
    :mod:`pclr_jax.training.checkpointing`) and ``close()``.
    """
    mode = config.loader.mode
    if mode == "host":
        loader = make_pair_loader(
            split, pair_loader_config(config), jax.process_index(), jax.process_count()
        )
        place = functools.partial(to_global_batch, mesh=mesh)
        return DevicePrefetcher(loader, place, config.loader.device_prefetch)
    if mode == "device_resident":
        placement = config.loader.device_resident_placement
        return DeviceResidentPairLoader(split, pair_loader_config(config), mesh, placement)
    raise ValueError(f"loader.mode={mode!r}: expected one of {FEED_MODES}")
