"""grain loaders over a prepared split: PCLR patient pairs for training, every ECG for evaluation.

A *prepared split* is any object with ``.source`` (random access: ``len(source)``, ``source[i]``
-> dict with ``'ecg'`` ``(samples, leads)`` float16/float32 mV and ``'record_id'``) and ``.index``
(a pandas DataFrame, row ``i`` describing ``source[i]``: ``record_id``, ``patient_id``, optionally
``ecg_group``), e.g. :func:`pclr_jax.data.prepared.load_prepared`'s result.

Training (:func:`make_pair_loader`): one grain element is one host-local batch; element ``j`` is
host ``process_index``'s slice of global batch ``j`` as laid out by
:class:`pclr_jax.data.pairing.PairSchedule` (patients shuffled per epoch, two distinct ECGs per
patient, each patient at most once per global batch, also across epoch boundaries). The iterator
is a ``grain.DatasetIterator``: ``get_state()``/``set_state()`` hold the next batch number, so a
restored run continues on exactly the next batch, and ``grain.checkpoint.CheckpointSave`` /
``CheckpointRestore`` store it in an Orbax checkpoint (one JSON file per process).

Batches are read straight into one preallocated array per view, float32 (the float16 -> float32
decode happens on that copy) or, with ``views_dtype='float16'``, the stored float16 (what the
training loop sends to the devices, where it is cast); with worker processes they travel as
float16 and are cast in the main process (FINDINGS: float32 batches crossing processes cost more
than they save).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pclr_jax.data.augment import AugmentConfig, augment
from pclr_jax.data.pairing import (
    SINGLE_ECG_MODES,
    PairSchedule,
    build_patient_table,
    host_positions,
)
from pclr_jax.runtime.layout import to_lane_dense

log = logging.getLogger(__name__)

NUMERIC_KEYS = ("view_a", "view_b", "patient_id")
VIEW_DTYPES = ("float32", "float16")
_AUGMENT_STREAM = 2  # after pairing's order (0) and pair (1) streams


@dataclasses.dataclass(frozen=True)
class PairLoaderConfig:
    """How to draw patient pairs.

    Attributes:
        batch_pairs: global batch size in pairs (2 ECGs each); divisible by the process count.
        seed: non-negative; fixes the patient order, the pair choice and the augmentations.
        shuffle: shuffle the patients each epoch (else dense patient order, for debugging).
        single_ecg_patients: ``'exclude'`` (default; counted and logged) or ``'augment'``: pair
            them with an augmented copy of their ECG (needs an augmentation switched on).
        augmentations: :class:`AugmentConfig` or its dict form (``AugmentConfig.from_dict``).
        num_epochs: ``None`` repeats forever; otherwise ``floor(epochs * pairable / batch_pairs)``
            batches (the final partial batch, fewer than ``batch_pairs`` pairs, is dropped).
        worker_count: grain worker processes (0: in-process, fastest on a few cores).
        read_threads: threads reading batches ahead in each process (0: read on demand in the
            calling thread). Decompression and the float16 -> float32 cast release the GIL: on
            two idle cores 2 threads read 6.1k ECG/s, 1 thread 3.2k (benchmarks/).
        prefetch_batches: batches buffered ahead per process.
        views_dtype: ``'float32'`` (default) or ``'float16'``, the dtype of the emitted views.
            Prepared ECGs are stored as float16, so ``'float16'`` is exact without augmentation
            and halves the bytes copied and sent to the devices (cast there:
            :mod:`pclr_jax.data.device_prefetch`); augmented views are rounded to float16.
            Worker processes always ship float16; the main process then casts to this dtype.
    """

    batch_pairs: int
    seed: int = 0
    shuffle: bool = True
    single_ecg_patients: str = "exclude"
    augmentations: AugmentConfig | Mapping[str, Any] = AugmentConfig()
    num_epochs: int | None = None
    worker_count: int = 0
    read_threads: int = 2
    prefetch_batches: int = 2
    views_dtype: str = "float32"

    def __post_init__(self):
        if not isinstance(self.augmentations, AugmentConfig):
            object.__setattr__(self, "augmentations", AugmentConfig.from_dict(self.augmentations))
        if self.single_ecg_patients not in SINGLE_ECG_MODES:
            raise ValueError(
                f"single_ecg_patients={self.single_ecg_patients!r}: expected {SINGLE_ECG_MODES}"
            )
        if self.single_ecg_patients == "augment" and not self.augmentations.enabled:
            raise ValueError(
                "single_ecg_patients='augment' pairs an ECG with an augmented copy of itself: "
                "switch on at least one augmentation"
            )
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs={self.num_epochs} must be positive or None")
        if min(self.worker_count, self.read_threads) < 0 or self.prefetch_batches < 1:
            raise ValueError("worker_count and read_threads must be >= 0, prefetch_batches >= 1")
        if self.views_dtype not in VIEW_DTYPES:
            raise ValueError(f"views_dtype={self.views_dtype!r}: expected one of {VIEW_DTYPES}")


class RecordReader:
    """Copies ECGs of index rows from a source into preallocated arrays, checking each record.

    Checks that ``source[row]['record_id']`` (when present) matches the index and that the ECG
    has the split's ``(samples, leads)`` shape; a mismatch raises ``ValueError`` naming the record.
    ``shape`` and ``dtype`` are the first record's (the split's stored dtype).
    """

    def __init__(self, prepared: Any):
        self.source = prepared.source
        index: pd.DataFrame = prepared.index
        if len(index) != len(self.source):
            raise ValueError(f"index has {len(index)} rows but the source {len(self.source)}")
        if len(index) == 0:
            raise ValueError("the split is empty")
        self.record_ids = index["record_id"].astype(str).to_numpy().astype(np.str_)
        first = np.asarray(self.source[0]["ecg"])
        self.shape, self.dtype = first.shape, first.dtype
        if len(self.shape) != 2:
            raise ValueError(
                f"record {self.record_ids[0]!r}: 'ecg' has shape {self.shape}, expected "
                "(samples, leads)"
            )

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[k] = source[rows[k]]['ecg']`` (cast to ``out``'s dtype); ``out``: ``(k, S, L)``."""
        for k, row in enumerate(rows):
            item = self.source[int(row)]
            expected = self.record_ids[row]
            record_id = item.get("record_id", expected)
            if isinstance(record_id, bytes):
                record_id = record_id.decode()
            if record_id != expected:
                raise ValueError(
                    f"source[{row}] is record {record_id!r} but the index says {expected!r}"
                )
            ecg = item["ecg"]
            if ecg.shape != self.shape:
                raise ValueError(
                    f"record {expected!r}: ECG shape {ecg.shape}, the split's is {self.shape}"
                )
            out[k] = ecg


class PairBatchBuilder:
    """grain map: batch number -> this host's slice of that global batch of patient pairs.

    Output: ``view_a``, ``view_b`` ``(b, samples, leads)`` in ``dtype`` (mV), ``patient_id``
    ``(b,)`` int32 (dense index among the split's patients), ``record_id_a``, ``record_id_b``
    ``(b,)`` str, where ``b = batch_pairs / process_count``. Augmentation uses a generator seeded
    by (seed, stream position), so it does not depend on the number of hosts or workers.
    """

    def __init__(
        self,
        reader: RecordReader,
        schedule: PairSchedule,
        augmentations: AugmentConfig,
        process_index: int,
        process_count: int,
        dtype: type = np.float32,
    ):
        self.reader = reader
        self.schedule = schedule
        self.augmentations = augmentations
        self.process_index = process_index
        self.process_count = process_count
        self.dtype = dtype

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        positions = host_positions(
            batch_index, self.schedule.batch_pairs, self.process_index, self.process_count
        )
        pairs = self.schedule.at(positions)
        shape = (len(positions), *self.reader.shape)
        views = {"view_a": np.empty(shape, self.dtype), "view_b": np.empty(shape, self.dtype)}
        self.reader.read(pairs.rows_a, views["view_a"])
        self.reader.read(pairs.rows_b, views["view_b"])
        if self.augmentations.enabled:
            same = pairs.same_record
            for k, position in enumerate(positions):
                rng = np.random.default_rng([self.schedule.seed, _AUGMENT_STREAM, position])
                views["view_a"][k] = augment(views["view_a"][k], rng, self.augmentations)
                views["view_b"][k] = augment(
                    views["view_b"][k], rng, self.augmentations, force=bool(same[k])
                )
        return {
            **views,
            "patient_id": pairs.patient_index.astype(np.int32),
            "record_id_a": self.reader.record_ids[pairs.rows_a],
            "record_id_b": self.reader.record_ids[pairs.rows_b],
        }


def _cast_views(batch: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {
        key: value.astype(dtype) if key in ("view_a", "view_b") else value
        for key, value in batch.items()
    }


def _allow_absl_flags_in_workers() -> None:
    """grain workers read an absl flag; outside ``absl.app`` the flags are unparsed (FINDINGS)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_pair_dataset(
    prepared: Any,
    config: PairLoaderConfig,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """The grain pipeline behind :func:`make_pair_loader` (iterate it to get the iterator)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if config.batch_pairs % process_count:
        raise ValueError(
            f"batch_pairs={config.batch_pairs} does not divide over {process_count} processes"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} out of range({process_count})")
    table = build_patient_table(prepared.index, config.single_ecg_patients)
    log.info("patient pairing: %s", table.summary())
    schedule = PairSchedule(table, config.batch_pairs, config.seed, config.shuffle)
    if config.num_epochs is None:
        num_batches = sys.maxsize
    else:
        num_batches = config.num_epochs * table.n_pairable // config.batch_pairs
    builder = PairBatchBuilder(
        RecordReader(prepared),
        schedule,
        config.augmentations,
        process_index,
        process_count,
        dtype=np.float16 if config.worker_count else np.dtype(config.views_dtype),
    )
    dataset = (
        grain.MapDataset.range(num_batches)
        .map(builder)
        .to_iter_dataset(
            grain.ReadOptions(
                num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_batches
            )
        )
    )
    if config.worker_count:
        _allow_absl_flags_in_workers()
        dataset = dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.worker_count, per_worker_buffer_size=config.prefetch_batches
            )
        )
        if config.views_dtype != "float16":
            dataset = dataset.map(functools.partial(_cast_views, dtype=config.views_dtype))
    return dataset


def make_pair_loader(
    prepared: Any,
    config: PairLoaderConfig,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """Iterator over this host's batches of patient pairs (see :class:`PairBatchBuilder`).

    ``process_index``/``process_count`` default to JAX's. The concatenation of all hosts' batches
    in process order is the global batch, which holds each patient at most once. Save and
    restore its position with ``get_state``/``set_state`` or, in an Orbax checkpoint, with
    ``grain.checkpoint.CheckpointSave(iterator)``/``CheckpointRestore(iterator)``.
    """
    return iter(make_pair_dataset(prepared, config, process_index, process_count))


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places each host's numeric arrays as one global batch sharded ``P('data')`` on ``mesh``.

    Returns ``view_a``, ``view_b`` ``(G, *lane_dense_shape(samples, leads))`` in the loader's
    dtype (:mod:`pclr_jax.runtime.layout`: the same bytes as ``(G, samples, leads)``, without the
    TPU's lane padding; the training step reshapes) and ``patient_id`` ``(G,)``, with ``G`` the
    global batch (the local batch times the process count); the string ids stay on the host.
    """
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    arrays = {key: np.asarray(local_batch[key]) for key in NUMERIC_KEYS}
    for key in ("view_a", "view_b"):
        arrays[key] = to_lane_dense(arrays[key])
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in arrays.items()
    }


class EvalBatchBuilder:
    """grain map: batch number -> this process's share of a padded batch of consecutive index rows.

    Global batch ``j`` covers index rows ``[j B, (j + 1) B)`` (``B = batch_size``, the last one
    padded); process ``p`` of ``P`` takes its ``B / P`` consecutive rows, so the processes' batches
    concatenated in process order are the global batch and every record is read by one process.
    Output: ``ecg`` ``(B / P, samples, leads)`` in ``dtype`` (``None``: as stored), mV (zeros where
    padded), ``mask``
    ``(B / P,)`` bool (True for real rows), ``row`` ``(B / P,)`` int64 (index row, -1 where
    padded), ``record_id`` ``(B / P,)`` str ('' where padded).
    """

    def __init__(
        self,
        reader: RecordReader,
        batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        dtype: Any = np.float32,
    ):
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} does not divide over {process_count}")
        self.reader = reader
        self.batch_size = batch_size
        self.local = batch_size // process_count
        self.offset = process_index * self.local
        self.dtype = reader.dtype if dtype is None else dtype

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        start = batch_index * self.batch_size + self.offset
        rows = np.arange(start, min(start + self.local, len(self.reader.record_ids)))
        ecg = np.zeros((self.local, *self.reader.shape), self.dtype)
        self.reader.read(rows, ecg)
        padding = self.local - len(rows)
        return {
            "ecg": ecg,
            "mask": np.arange(self.local) < len(rows),
            "row": np.pad(rows, (0, padding), constant_values=-1),
            "record_id": np.pad(self.reader.record_ids[rows], (0, padding), constant_values=""),
        }


def iter_eval_batches(
    prepared: Any,
    batch_size: int,
    read_threads: int = 2,
    process_index: int = 0,
    process_count: int = 1,
    dtype: Any = np.float32,
) -> Iterator[dict[str, np.ndarray]]:
    """Every record of a prepared split in index order, in batches (see :class:`EvalBatchBuilder`).

    The last batch is padded to ``batch_size``; keep ``batch['mask']`` rows. No pairing, no
    augmentation. With ``process_count > 1``, this process's share of each batch only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    reader = RecordReader(prepared)
    num_batches = -(-len(reader.record_ids) // batch_size)
    builder = EvalBatchBuilder(reader, batch_size, process_index, process_count, dtype)
    dataset = (
        grain.MapDataset.range(num_batches)
        .map(builder)
        .to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2))
    )
    return iter(dataset)
