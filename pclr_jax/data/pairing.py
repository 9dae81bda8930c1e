"""Epoch-wise patient pairing for PCLR: which two ECGs of which patient fill each batch slot.

Everything here is a pure function of the split's index, the seed and the epoch, so any host can
compute any batch without communicating, and a resumed run only needs the batch number.

The training stream is the concatenation of epochs. Epoch ``e`` is an order of the *pairable*
patients (patients with at least two distinct ECGs, plus single-ECG patients when they are paired
with an augmented copy of their ECG); global batch ``j`` is stream positions
``[j * B, (j + 1) * B)``. A patient appears once per epoch, so a batch that lies inside one epoch
holds distinct patients. A batch that straddles the boundary between epochs ``e - 1`` and ``e``
holds the last ``t`` patients of epoch ``e - 1`` and the first ``B - t`` of epoch ``e``; epoch
``e``'s order is its seeded permutation with any of those ``t`` patients that fall into its
first ``B - t`` places swapped with the next patients not among them (:func:`epoch_order`). The
swaps never touch the last places of an epoch, so every epoch's tail is known from its raw
permutation alone: no recursion over earlier epochs. This needs ``n >= 2B - gcd(n, B)`` pairable
patients (always true for ``n >= 2B - 1``; :func:`check_batch_size` says so otherwise). Nothing
is dropped at epoch ends.

Duplicates: rows sharing an ``ecg_group`` value are copies of one ECG (say the same PTB-XL ECG at
100 and 500 Hz); a patient's *distinct* ECGs are its groups, a positive pair takes two different
groups, and a single-ECG patient is one with a single group (however many copies).
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pandas as pd

SINGLE_ECG_MODES = ("exclude", "augment")

# Stream tags: independent random streams for the patient order and the pair choice.
_ORDER_STREAM = 0
_PAIR_STREAM = 1


@dataclasses.dataclass(frozen=True)
class PatientTable:
    """The pairable patients of a split and their ECGs, as CSR arrays.

    ``P`` pairable patients, ``G`` distinct ECGs (groups) among them, ``R`` index rows in them.
    Pairable patient ``p`` owns groups ``group_offsets[p]:group_offsets[p + 1]``; group ``g`` owns
    rows ``rows[record_offsets[g]:record_offsets[g + 1]]`` (rows of the split's index).

    Attributes:
        patient_index: ``(P,)`` int32, each pairable patient's dense index among *all* the split's
            patients (sorted patient ids), the ``patient_id`` the loader emits.
        patient_ids: ``(P,)`` the original patient ids.
        group_offsets: ``(P + 1,)`` int64.
        record_offsets: ``(G + 1,)`` int64.
        rows: ``(R,)`` int64.
        n_patients: patients in the split.
        n_records: rows in the split's index.
        single_ecg_patients: patients with one distinct ECG.
        single_ecg_records: index rows belonging to them.
        single_ecg_mode: ``'exclude'`` (left out) or ``'augment'`` (pairable, with themselves).
    """

    patient_index: np.ndarray
    patient_ids: np.ndarray
    group_offsets: np.ndarray
    record_offsets: np.ndarray
    rows: np.ndarray
    n_patients: int
    n_records: int
    single_ecg_patients: int
    single_ecg_records: int
    single_ecg_mode: str

    @property
    def n_pairable(self) -> int:
        return len(self.patient_index)

    def summary(self) -> dict[str, int | str]:
        """Counts for logs and reports."""
        multi = self.n_patients - self.single_ecg_patients
        return {
            "patients": self.n_patients,
            "records": self.n_records,
            "patients_with_2plus_ecgs": multi,
            "single_ecg_patients": self.single_ecg_patients,
            "single_ecg_records": self.single_ecg_records,
            "single_ecg_mode": self.single_ecg_mode,
            "pairable_patients": self.n_pairable,
        }


def build_patient_table(index: pd.DataFrame, single_ecg_patients: str = "exclude") -> PatientTable:
    """Groups a split's index rows by patient and distinct ECG.

    Args:
        index: one row per record with a ``patient_id`` column and optionally ``ecg_group``
            (rows sharing a value are copies of one ECG; a missing value is an ECG of its own).
            Without ``ecg_group`` every row is its own ECG.
        single_ecg_patients: ``'exclude'`` leaves patients with one distinct ECG out (they are
            counted); ``'augment'`` keeps them, to be paired with an augmented copy.

    Raises:
        ValueError: an unknown mode, missing patient ids, or an ``ecg_group`` shared by two
            patients (named).
    """
    if single_ecg_patients not in SINGLE_ECG_MODES:
        raise ValueError(
            f"single_ecg_patients={single_ecg_patients!r}: expected one of {SINGLE_ECG_MODES}"
        )
    if "patient_id" not in index:
        raise ValueError("the index has no 'patient_id' column")
    patient_ids = index["patient_id"]
    if patient_ids.isna().any():
        row = int(np.flatnonzero(patient_ids.isna().to_numpy())[0])
        record = index["record_id"].iloc[row] if "record_id" in index else row
        raise ValueError(f"record {record!r} (index row {row}) has no patient_id")
    patient_codes, unique_patients = pd.factorize(patient_ids, sort=True)
    if "ecg_group" in index:
        group_codes, unique_groups = pd.factorize(index["ecg_group"])
        missing = group_codes < 0  # no group: a copy of nothing else
        group_codes[missing] = len(unique_groups) + np.arange(missing.sum())
        owners = pd.DataFrame({"group": group_codes, "patient": patient_codes})
        per_group = owners.groupby("group")["patient"].nunique()
        if (per_group > 1).any():
            group = int(per_group.index[np.argmax(per_group.to_numpy() > 1)])
            names = unique_patients[owners.loc[owners.group == group, "patient"].unique()]
            raise ValueError(
                f"ecg_group {unique_groups[group]} is shared by patients "
                f"{[str(name) for name in names]}; "
                "copies of one ECG must belong to one patient"
            )
    else:
        group_codes = np.arange(len(index))

    rows = np.lexsort((np.arange(len(index)), group_codes, patient_codes))
    row_patient = patient_codes[rows]
    row_group = group_codes[rows]
    group_start = np.flatnonzero(np.r_[True, row_group[1:] != row_group[:-1]])
    group_patient = row_patient[group_start]
    groups_per_patient = np.bincount(group_patient, minlength=len(unique_patients))
    records_per_patient = np.bincount(row_patient, minlength=len(unique_patients))
    single = groups_per_patient == 1
    keep_patient = groups_per_patient >= (1 if single_ecg_patients == "augment" else 2)

    group_size = np.diff(np.r_[group_start, len(rows)])
    kept_rows = rows[keep_patient[row_patient]]
    record_offsets = np.r_[0, np.cumsum(group_size[keep_patient[group_patient]])]
    pairable = np.flatnonzero(keep_patient)
    group_offsets = np.r_[0, np.cumsum(groups_per_patient[pairable])]
    return PatientTable(
        patient_index=pairable.astype(np.int32),
        patient_ids=np.asarray(unique_patients)[pairable],
        group_offsets=group_offsets.astype(np.int64),
        record_offsets=record_offsets.astype(np.int64),
        rows=kept_rows.astype(np.int64),
        n_patients=len(unique_patients),
        n_records=len(index),
        single_ecg_patients=int(single.sum()),
        single_ecg_records=int(records_per_patient[single].sum()),
        single_ecg_mode=single_ecg_patients,
    )


def check_batch_size(n_pairable: int, batch_pairs: int) -> None:
    """Raises ``ValueError`` unless ``batch_pairs`` distinct patients fit every batch.

    Batches straddling an epoch boundary need ``n >= 2B - gcd(n, B)`` (see the module docstring).
    """
    if batch_pairs < 1:
        raise ValueError(f"batch_pairs={batch_pairs} must be positive")
    needed = 2 * batch_pairs - math.gcd(n_pairable, batch_pairs)
    if n_pairable < needed:
        raise ValueError(
            f"{n_pairable} pairable patients cannot fill batches of {batch_pairs} distinct "
            f"patients across epoch boundaries (needs at least {needed}); use batch_pairs <= "
            f"{(n_pairable + 1) // 2}, or a batch size dividing {n_pairable}"
        )


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Epoch ``epoch``'s raw patient order: a seeded permutation of ``range(n)`` (int64)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, _ORDER_STREAM, epoch]).permutation(n)


def boundary_tail(n: int, batch_pairs: int, epoch: int) -> int:
    """How many of epoch ``epoch - 1``'s last patients share a batch with epoch ``epoch``.

    ``t = (epoch * n) mod B``: the batch straddling the boundary holds those ``t`` patients and
    epoch ``epoch``'s first ``B - t``; 0 when epoch ``epoch`` starts a batch.
    """
    return (epoch * n) % batch_pairs


def epoch_order(
    n: int, batch_pairs: int, seed: int, epoch: int, shuffle: bool = True
) -> np.ndarray:
    """Epoch ``epoch``'s patient order (pairable-patient numbers), safe across the boundary.

    The raw permutation with any of the previous epoch's last ``t`` patients that land in this
    epoch's first ``B - t`` places swapped, in order, with the first later patients (before this
    epoch's own last places) that are not among them. Requires :func:`check_batch_size`.
    """
    order = epoch_permutation(n, seed, epoch, shuffle)
    tail = boundary_tail(n, batch_pairs, epoch)
    if tail == 0:
        return order
    head = batch_pairs - tail
    in_tail = np.zeros(n, bool)
    in_tail[epoch_permutation(n, seed, epoch - 1, shuffle)[n - tail :]] = True
    conflicts = np.flatnonzero(in_tail[order[:head]])
    if len(conflicts):
        middle = np.arange(head, n - boundary_tail(n, batch_pairs, epoch + 1))
        free = middle[~in_tail[order[middle]]][: len(conflicts)]
        if len(free) < len(conflicts):
            raise ValueError(
                f"{n} pairable patients are too few for batches of {batch_pairs}; "
                "see check_batch_size"
            )
        order[conflicts], order[free] = order[free], order[conflicts]
    return order


def epoch_pairs(table: PatientTable, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pairable patient's two index rows for epoch ``epoch``: ``(rows_a, rows_b)``, ``(P,)``.

    Two different distinct ECGs (groups), uniformly among the patient's ordered pairs of groups,
    then a uniform copy within each group. A single-ECG patient (mode ``'augment'``) gets one row
    twice, never two copies of its ECG.
    """
    n = table.n_pairable
    uniform = np.random.default_rng([seed, _PAIR_STREAM, epoch]).random((n, 4))
    n_groups = np.diff(table.group_offsets)
    first = np.minimum((uniform[:, 0] * n_groups).astype(np.int64), n_groups - 1)
    other_choices = np.maximum(n_groups - 1, 1)
    second = np.minimum((uniform[:, 1] * other_choices).astype(np.int64), other_choices - 1)
    second = np.where(n_groups > 1, second + (second >= first), first)
    rows = []
    for local_group, draw in ((first, uniform[:, 2]), (second, uniform[:, 3])):
        group = table.group_offsets[:-1] + local_group
        start = table.record_offsets[group]
        size = table.record_offsets[group + 1] - start
        copy = np.minimum((draw * size).astype(np.int64), size - 1)
        rows.append(table.rows[start + copy])
    return rows[0], np.where(n_groups > 1, rows[1], rows[0])


def host_positions(
    batch_index: int, batch_pairs: int, process_index: int, process_count: int
) -> np.ndarray:
    """Stream positions of host ``process_index``'s slice of global batch ``batch_index``.

    Hosts take consecutive, equal slices in process order, so concatenating the hosts' local
    batches gives the global batch.
    """
    local = batch_pairs // process_count
    start = batch_index * batch_pairs + process_index * local
    return np.arange(start, start + local, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class SlotPairs:
    """The pairs in a run of stream positions (``(b,)`` arrays each).

    ``same_record`` marks single-ECG patients paired with their own ECG (mode ``'augment'``).
    """

    epoch: np.ndarray
    patient_index: np.ndarray
    rows_a: np.ndarray
    rows_b: np.ndarray

    @property
    def same_record(self) -> np.ndarray:
        return self.rows_a == self.rows_b


class PairSchedule:
    """Stream position -> (epoch, patient, two index rows), for one split, batch size and seed.

    A thin cache over :func:`epoch_order` and :func:`epoch_pairs`: each epoch's arrays are
    computed once (``O(P)``) and the last few are kept. Thread-safe, and cheap to pickle (the
    cache stays behind).
    """

    _CACHED_EPOCHS = 4

    def __init__(self, table: PatientTable, batch_pairs: int, seed: int, shuffle: bool = True):
        if seed < 0:
            raise ValueError(f"seed={seed} must be non-negative")
        check_batch_size(table.n_pairable, batch_pairs)
        self.table = table
        self.batch_pairs = batch_pairs
        self.seed = seed
        self.shuffle = shuffle
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())

    def epoch_arrays(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, rows_a, rows_b)`` of epoch ``epoch`` (see the module functions)."""
        with self._lock:
            arrays = self._cache.get(epoch)
            if arrays is None:
                n = self.table.n_pairable
                order = epoch_order(n, self.batch_pairs, self.seed, epoch, self.shuffle)
                arrays = (order, *epoch_pairs(self.table, self.seed, epoch))
                self._cache[epoch] = arrays
                for stale in sorted(self._cache)[: -self._CACHED_EPOCHS]:
                    del self._cache[stale]
        return arrays

    def at(self, positions: np.ndarray) -> SlotPairs:
        """The pairs at stream ``positions`` (``(b,)`` int64, at most two consecutive epochs)."""
        n = self.table.n_pairable
        epochs = positions // n
        patient = np.empty(len(positions), np.int64)
        rows_a = np.empty(len(positions), np.int64)
        rows_b = np.empty(len(positions), np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            order, epoch_rows_a, epoch_rows_b = self.epoch_arrays(int(epoch))
            patient[here] = order[positions[here] % n]
            rows_a[here] = epoch_rows_a[patient[here]]
            rows_b[here] = epoch_rows_b[patient[here]]
        return SlotPairs(
            epoch=epochs,
            patient_index=self.table.patient_index[patient],
            rows_a=rows_a,
            rows_b=rows_b,
        )
