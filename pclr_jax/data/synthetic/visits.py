"""What changes between one patient's ECGs beyond a single recording session, and what makes
patients look alike: the realistic configs of :mod:`pclr_jax.data.synthetic.generator`.

All of it is off by default (the knobs of
:class:`~pclr_jax.data.synthetic.generator.SyntheticConfig` are
zero), and then nothing here draws a random number, so the older configs are unchanged. Each
patient's visit draws come from a stream of their own (:data:`VISIT_STREAM`), its family from
:data:`~pclr_jax.data.synthetic.traits.FAMILY_STREAM` (families are drawn with the traits, in
:func:`~pclr_jax.data.synthetic.traits.family_mix`).

=========================  ===================================================================
morphology families        ``morphology_families`` families; a patient belongs to one (uniform,
                           from its visit stream). Every latent normal but age becomes
                           sqrt(w) family + sqrt(1 - w) own, w = ``family_weight``: the population
                           keeps its spread, but patients of one family share axis, voltage,
                           intervals, shape signature and torso (lead matrix).
visits years apart         gaps between consecutive ECGs exponential with mean
                           ``visit_interval_years``; the age grows with them, which moves every
                           age-dependent trait (axis, voltages, PR, QTc, QRS width) and risk.
trait drift                every latent normal but age takes a random walk of
                           ``trait_drift_per_year`` sqrt(years), plus ``visit_jitter`` N(0, 1)
                           independently per ECG (one patient's beats are never twice the same);
                           the heart-rate normal takes another ``heart_rate_jitter`` N(0, 1) per
                           ECG (rest, stress, medication: rate varies more than shape).
conditions per ECG         AF, LVH and BBB liabilities (the normal quantile of the patient's
                           uniform) walk by ``condition_drift_per_year`` sqrt(years) plus
                           ``condition_jitter`` per ECG, rescaled to unit variance so that the
                           prevalence stays calibrated: conditions appear (new AF, new BBB) and
                           resolve (paroxysmal AF); LVH voltage grows by
                           ``lvh_progression_per_year`` per year. The labels are the ECG's.
lead faults                with ``limb_reversal_rate`` the left- and right-arm electrodes are
                           swapped (I -> -I, II -> III); with ``precordial_swap_rate`` two
                           neighbouring chest electrodes are swapped.
=========================  ===================================================================
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import ndtr, ndtri

from pclr_jax.data.synthetic.config import SyntheticConfig
from pclr_jax.data.synthetic.traits import (
    N_NORMALS,
    NORMALS,
    UNIFORMS,
    PatientModel,
    model_from_draws,
    patient_rng,
)

VISIT_STREAM = 3
CONDITIONS = ("af", "lvh", "bbb")
_AGE = NORMALS.index("age")
_HEART_RATE = NORMALS.index("heart_rate")
_CONDITION_COLUMNS = [UNIFORMS.index(name) for name in CONDITIONS]
_PRECORDIAL = slice(2, 8)  # V1-V6 among the independent leads I, II, V1-V6


def visits_enabled(config: SyntheticConfig) -> bool:
    """Whether any per-visit change or lead fault is on."""
    return bool(
        config.visit_interval_years
        or config.trait_drift_per_year
        or config.visit_jitter
        or config.heart_rate_jitter
        or config.condition_jitter
        or config.limb_reversal_rate
        or config.precordial_swap_rate
    )


@dataclasses.dataclass(frozen=True)
class Visits:
    """Per-ECG visit draws, ``N`` ECGs.

    Attributes:
        years_since_first: ``(N,)`` years since the patient's first ECG.
        limb_reversal: ``(N,)`` 1 where the arm electrodes are swapped.
        precordial_swap: ``(N,)`` -1, or ``k`` where chest electrodes V(k+1) and V(k+2) are swapped.
    """

    years_since_first: np.ndarray
    limb_reversal: np.ndarray
    precordial_swap: np.ndarray


def visit_models(
    config: SyntheticConfig, model: PatientModel, owner: np.ndarray, ecg_index: np.ndarray
) -> tuple[PatientModel, Visits]:
    """The model of every ECG (row ``i`` belongs to patient row ``owner[i]`` of ``model``, its
    ``ecg_index[i]``-th ECG, ECGs of a patient consecutive) and its visit draws."""
    patient_ids = model.traits["patient_id"].to_numpy()
    n = len(owner)
    gaps = np.empty(n)
    walk = np.empty((n, N_NORMALS))
    jitter = np.empty((n, N_NORMALS))
    condition_walk = np.empty((n, len(CONDITIONS)))
    condition_jitter = np.empty((n, len(CONDITIONS)))
    faults = np.empty((n, 3))
    for row in np.unique(owner):
        ecgs = np.flatnonzero(owner == row)
        rng = patient_rng(config.seed, VISIT_STREAM, patient_ids[row])
        count = len(ecgs)
        gaps[ecgs] = rng.exponential(1.0, count)
        walk[ecgs] = rng.standard_normal((count, N_NORMALS))
        jitter[ecgs] = rng.standard_normal((count, N_NORMALS))
        condition_walk[ecgs] = rng.standard_normal((count, len(CONDITIONS)))
        condition_jitter[ecgs] = rng.standard_normal((count, len(CONDITIONS)))
        faults[ecgs] = rng.random((count, 3))

    first = ecg_index == 0
    gaps = np.where(first, 0.0, gaps * config.visit_interval_years)
    years = _cumsum_per_patient(gaps, first)
    step = np.sqrt(gaps)[:, None]
    normals = (
        model.normals[owner]
        + config.trait_drift_per_year * _cumsum_per_patient(step * walk, first)
        + config.visit_jitter * jitter
    )
    normals[:, _AGE] = model.normals[owner, _AGE]
    # The age column of the jitter is otherwise unused: it serves as the heart-rate jitter.
    normals[:, _HEART_RATE] += config.heart_rate_jitter * jitter[:, _AGE]

    uniforms = model.uniforms[owner].copy()
    liability = ndtri(uniforms[:, _CONDITION_COLUMNS])
    moved = (
        config.condition_drift_per_year * _cumsum_per_patient(step * condition_walk, first)
        + config.condition_jitter * condition_jitter
    )
    variance = config.condition_drift_per_year**2 * years + config.condition_jitter**2
    uniforms[:, _CONDITION_COLUMNS] = ndtr((liability + moved) / np.sqrt(1.0 + variance)[:, None])

    ecg_model = model_from_draws(config, patient_ids[owner], normals, uniforms, years)
    swap = faults[:, 1] < config.precordial_swap_rate
    visits = Visits(
        years_since_first=years,
        limb_reversal=(faults[:, 0] < config.limb_reversal_rate).astype(np.int64),
        precordial_swap=np.where(swap, (faults[:, 2] * 5).astype(np.int64), -1),
    )
    return ecg_model, visits


def _cumsum_per_patient(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` (rows) restarting at every ``first`` row."""
    total = np.cumsum(values, axis=0)
    starts = np.flatnonzero(first)
    before = np.concatenate([np.zeros_like(total[:1]), total[:-1]])[starts]
    segment = np.cumsum(first) - 1
    return total - before[segment]


def apply_lead_faults(lead_matrix: np.ndarray, visits: Visits) -> np.ndarray:
    """``(N, 3, 8)`` dipole-to-lead matrices with each ECG's electrode faults applied."""
    out = lead_matrix.copy()
    arms = visits.limb_reversal == 1
    out[arms, :, 0] = -lead_matrix[arms, :, 0]
    out[arms, :, 1] = lead_matrix[arms, :, 1] - lead_matrix[arms, :, 0]
    for k in range(5):
        rows = visits.precordial_swap == k
        left, right = _PRECORDIAL.start + k, _PRECORDIAL.start + k + 1
        out[rows, :, left], out[rows, :, right] = (
            lead_matrix[rows, :, right],
            lead_matrix[rows, :, left],
        )
    return out
