"""Deterministic patient-level split assignment: train / validation / test never share a patient.

A patient's split is a pure function of its id (and a salt): the first 8 bytes of
``sha256(salt + ":" + patient_id)`` as a fraction in ``[0, 1)`` are compared with the cumulative
split fractions. The assignment of a patient therefore does not depend on which other patients are
in the collection: adding ECGs or patients later moves no existing patient to another split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
DEFAULT_SALT = "pclr-jax"


def patient_fraction(patient_id: object, salt: str = DEFAULT_SALT) -> float:
    """A patient's uniform pseudo-random position in ``[0, 1)`` (``str(patient_id)`` hashed)."""
    digest = hashlib.sha256(f"{salt}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fractions(fractions: Mapping[str, float]) -> None:
    """Raises ValueError unless ``fractions`` maps split names to values >= 0 summing to 1."""
    if not fractions:
        raise ValueError("no split fractions given")
    if any(value < 0 for value in fractions.values()):
        raise ValueError(f"split fractions must be >= 0, got {dict(fractions)}")
    if not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")


def assign_splits(
    patient_ids: Iterable[object],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    salt: str = DEFAULT_SALT,
) -> np.ndarray:
    """The split name of each patient id (ids compared as ``str``).

    Args:
        patient_ids: one id per record (repeats are fine: equal ids get equal splits).
        fractions: split name -> expected fraction of patients, in assignment order.
        salt: changes the assignment as a whole (a different random split).

    Returns:
        ``(n,)`` object array of split names.
    """
    check_fractions(fractions)
    names = list(fractions)
    edges = np.cumsum([fractions[name] for name in names])
    edges[-1] = np.inf  # rounding must never leave a patient unassigned
    ids = pd.Series([str(p) for p in patient_ids], dtype=object)
    unique = ids.unique()
    positions = np.array([patient_fraction(p, salt) for p in unique])
    chosen = np.asarray(names, dtype=object)[np.searchsorted(edges, positions, side="right")]
    lookup = dict(zip(unique, chosen, strict=True))
    return ids.map(lookup).to_numpy(dtype=object)


def splits_from_folds(
    folds: Iterable[int],
    validation_folds: Iterable[int] = (9,),
    test_folds: Iterable[int] = (10,),
) -> np.ndarray:
    """Split names from predefined folds (PTB-XL ``strat_fold``: 1-8 train, 9 validation, 10 test).

    Patient-disjoint exactly when the folds are (true for PTB-XL's ``strat_fold``).
    """
    folds = np.asarray(list(folds), dtype=np.int64)
    out = np.full(folds.shape, "train", dtype=object)
    out[np.isin(folds, list(validation_folds))] = "validation"
    out[np.isin(folds, list(test_folds))] = "test"
    return out


def check_patient_disjoint(patient_ids: Iterable[object], splits: Iterable[str]) -> None:
    """Raises ValueError naming a patient that appears in more than one split."""
    frame = pd.DataFrame({"patient_id": [str(p) for p in patient_ids], "split": list(splits)})
    counts = frame.groupby("patient_id")["split"].nunique()
    shared = counts[counts > 1]
    if len(shared):
        patient = shared.index[0]
        found = sorted(frame.loc[frame.patient_id == patient, "split"].unique())
        raise ValueError(
            f"{len(shared)} patients are in more than one split, e.g. {patient!r} in {found}"
        )
