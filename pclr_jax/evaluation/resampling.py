"""Patient-level bootstrap resampling, stratified so that every scored class keeps positives and
negatives in every resample.

The unit of a test set is the patient, not the ECG: a patient's ECGs share the patient's
physiology, so resampling ECGs treats correlated rows as independent and gives intervals that are
too narrow. A resample here draws patients with replacement and gives each ECG the number of times
its patient was drawn as its weight (the metrics take sample weights, ``metrics.weighted_*``).

A class-averaged (macro) metric is an average over a fixed set of classes. If a resample may draw
none of a rare class's positive patients, that class's metric is undefined in it, and averaging
over the classes that remain would change what is averaged from resample to resample (the bias of
dropping a class). So the patients are split into strata and every stratum is resampled to its own
size: for each class, rarest first, if no stratum holds only patients positive for it, the stratum
with most of its positive patients is split into its positive and its other patients (both parts
keep every guarantee the stratum gave earlier classes); the same for negatives. Then every class
scored on the test set has at least one positive and one negative patient in every resample, and
the macro average is over the same classes as the point estimate.

A class with a single positive (or negative) patient is scored, but that patient sits in a stratum
of its own and is drawn exactly once in every resample: the interval leaves out the noise of which
patient that was. ``ResamplingPlan.thin_classes`` names these classes so that reports can say so.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# A class needs at least this many positive and negative patients for its sampling noise to be in
# the interval (with one, that patient is fixed in every resample).
MIN_PATIENTS_PER_SIDE = 2


@dataclasses.dataclass(frozen=True)
class ResamplingPlan:
    """How to draw patient-level bootstrap weights for ``n_rows`` test rows.

    Attributes:
        row_patient: ``(n_rows,)`` dense patient index of each row, in ``[0, n_patients)``.
        strata: patient indices of each stratum; every patient is in exactly one.
        thin_classes: columns (of the class indicator the plan was stratified on) with fewer than
            ``MIN_PATIENTS_PER_SIDE`` positive or negative patients.
    """

    row_patient: np.ndarray
    strata: tuple[np.ndarray, ...]
    thin_classes: tuple[int, ...] = ()

    @property
    def n_patients(self) -> int:
        return int(sum(len(s) for s in self.strata))

    def patient_counts(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, n_patients)`` times each patient is drawn; each stratum keeps its size."""
        counts = np.zeros((size, self.n_patients))
        for stratum in self.strata:
            n = len(stratum)
            counts[:, stratum] = rng.multinomial(n, np.full(n, 1.0 / n), size=size)
        return counts

    def weights(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, n_rows)`` bootstrap weights: each row's patient's draw count."""
        return self.patient_counts(rng, size)[:, self.row_patient]


def dense_patients(patients: np.ndarray | None, n_rows: int) -> np.ndarray:
    """``(n_rows,)`` patient index in ``[0, n_patients)``; ``None``: every row its own patient."""
    if patients is None:
        return np.arange(n_rows)
    patients = np.asarray(patients)
    if patients.shape != (n_rows,):
        raise ValueError(f"patient ids must have shape ({n_rows},), got {patients.shape}")
    return np.unique(patients, return_inverse=True)[1].reshape(n_rows)


def _split_for(strata: list[np.ndarray], members: np.ndarray) -> None:
    """Makes some stratum hold only ``members`` (a boolean mask over patients), if none does, by
    splitting the stratum that holds most of them. In place."""
    inside = [int(members[s].sum()) for s in strata]
    if any(count == len(s) for count, s in zip(inside, strata, strict=True)):
        return
    best = int(np.argmax(inside))
    if inside[best] == 0:
        return
    stratum = strata.pop(best)
    strata += [stratum[members[stratum]], stratum[~members[stratum]]]


def resampling_plan(
    patients: np.ndarray | None = None,
    indicator: np.ndarray | None = None,
    n_rows: int | None = None,
) -> ResamplingPlan:
    """A patient-level plan, stratified on the classes of ``indicator``.

    Args:
        patients: ``(n,)`` patient id of each row (any dtype); ``None``: each row is a patient.
        indicator: ``(n, C)`` 0/1 class membership of each row (a binary label is ``(n, 1)``);
            ``None``: no stratification (regression, retrieval). A patient counts as a positive
            of a class when any of its rows is positive, and as a negative when any is negative.
        n_rows: the number of rows when both ``patients`` and ``indicator`` are ``None``.
    """
    if indicator is not None:
        indicator = np.asarray(indicator, dtype=bool)
        indicator = indicator.reshape(len(indicator), -1)
        n_rows = len(indicator)
    elif patients is not None:
        n_rows = len(patients)
    if n_rows is None:
        raise ValueError("give patients, indicator or n_rows")
    row_patient = dense_patients(patients, n_rows)
    n_patients = int(row_patient.max(initial=-1)) + 1
    strata = [np.arange(n_patients)]
    thin: list[int] = []
    if indicator is not None:
        # A patient is on a class's positive side when any of its rows is positive, and on its
        # negative side when any is negative (a patient can be on both).
        has_positive = np.zeros((n_patients, indicator.shape[1]), dtype=bool)
        has_negative = np.zeros_like(has_positive)
        np.logical_or.at(has_positive, row_patient, indicator)
        np.logical_or.at(has_negative, row_patient, ~indicator)
        positives, negatives = has_positive.sum(axis=0), has_negative.sum(axis=0)
        scored = np.flatnonzero((positives > 0) & (negatives > 0))
        for column in scored[np.argsort(positives[scored], kind="stable")]:
            _split_for(strata, has_positive[:, column])
        for column in scored[np.argsort(negatives[scored], kind="stable")]:
            _split_for(strata, has_negative[:, column])
        sides = np.minimum(positives, negatives)
        thin = [int(c) for c in scored if sides[c] < MIN_PATIENTS_PER_SIDE]
    return ResamplingPlan(row_patient, tuple(strata), tuple(thin))
