"""A synthetic multi-patient 12-lead ECG data set with physiological structure.

Patients (:mod:`pclr_jax.data.synthetic.traits`) carry latent traits -- age, sex, QRS axis, QRS
width, QT, voltage, left ventricular hypertrophy (LVH), atrial fibrillation (AF), bundle-branch
block (BBB) -- that shape a cardiac dipole, plus a personal shape signature. Each recording of a
patient (:func:`iter_synthetic_chunks`) varies what changes between visits:

=====================  ==========================================================================
heart rate             patient rate times exp(0.07 z) [40, 150] bpm (AF: exp(0.08 z)).
RR intervals           sinus: respiratory sinus arrhythmia at the breathing rate (uniform
                       0.15-0.35 Hz, depth rsa_fraction exp(0.2 z)) times exp(0.012 z) beat to
                       beat; AF: independent log-normal RR with sigma rr_irregularity. RR in
                       [0.3, 2.0] s. The first beat falls at a uniformly random phase.
electrodes             gain exp(0.05 z) overall and exp(0.03 z) per lead; lead-matrix jitter
                       0.01 z (limb) and 0.06 z (precordial electrode placement).
posture                the dipole turned 5 z degrees in the frontal plane and 5 z degrees about
                       the vertical axis (body position, breathing phase).
baseline wander        sinusoids at the breathing rate and at 0.03-0.1 Hz, amplitude log-uniform
                       in baseline_wander_mv times N(0, 1) per lead.
mains hum              with probability powerline_probability: 50 or 60 Hz, amplitude
                       log-uniform in powerline_mv times N(0, 1) per lead.
white noise            standard deviation log-uniform in noise_mv, times exp(0.25 z) per lead.
AF f-waves             patient rate times exp(0.05 z) Hz, frequency modulation 3 rad at 0.1-0.4 Hz,
                       amplitude modulation 50 % at 0.2-0.8 Hz.
=====================  ==========================================================================

Artefacts are added on the independent leads I, II, V1-V6 and the other four limb leads are
derived afterwards, so Einthoven's law holds in every ECG (see
:mod:`pclr_jax.data.synthetic.render`). White noise is cut from a bank of 2**22 standard-normal
float32 samples per seed at random offsets (drawing 32,768 Gaussians per ECG would cost more than
rendering it).

Everything is deterministic for a seed and independent of chunking: each patient has its own
random streams, keyed by the seed and its id.

The realistic configs add, on streams of their own, look-alike families, visits years apart with
drifting traits and conditions that change between ECGs, and electrode faults
(:mod:`pclr_jax.data.synthetic.visits`); the metadata then also says each ECG's years since the
patient's first, and its faults (``limb_reversal`` 0/1, ``precordial_swap`` -1 or the first of the
two swapped chest leads, 0 = V1).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from pclr_jax.data.synthetic.config import RR_RANGE_S, SyntheticConfig
from pclr_jax.data.synthetic.render import INDEPENDENT_LEADS, WAVES, RenderInputs, render
from pclr_jax.data.synthetic.traits import (
    NOISE_BANK_STREAM,
    RECORDING_STREAM,
    PatientModel,
    patient_rng,
    sample_patient_model,
)
from pclr_jax.data.synthetic.visits import apply_lead_faults, visit_models, visits_enabled

NOISE_BANK_SIZE = 2**22
RENDER_BATCH = 32

ECG_COLUMNS = (
    "record_id",
    "patient_id",
    "ecg_index",
    "heart_rate_bpm",
    "age",
    "sex",
    "af",
    "lvh",
    "bbb",
    "noise_std_mv",
    "baseline_wander_mv",
    "years_since_first",
    "limb_reversal",
    "precordial_swap",
)

_LEADS = len(INDEPENDENT_LEADS)
_NORMAL_BLOCKS = {  # name -> number of standard normals per ECG
    "heart_rate": 1,
    "rsa": 1,
    "f_wave_hz": 1,
    "gain": 1,
    "lead_gain": _LEADS,
    "noise": _LEADS,
    "wander": 2 * _LEADS,
    "powerline": _LEADS,
    "electrodes": 3 * _LEADS,
    "posture": 2,
}
_UNIFORM_BLOCKS = {
    "breathing_hz": 1,
    "breathing_phase": 1,
    "first_beat": 1,
    "noise_mv": 1,
    "wander_mv": 1,
    "drift_hz": 1,
    "drift_phase": 1,
    "powerline_on": 1,
    "powerline_hz": 1,
    "powerline_mv": 1,
    "powerline_phase": 1,
    "f_phase": 1,
    "fm_hz": 1,
    "fm_phase": 1,
    "am_hz": 1,
    "am_phase": 1,
    "noise_offset": _LEADS,
}


def sample_patients(config: SyntheticConfig) -> pd.DataFrame:
    """One row per patient: patient_id, age (years), sex (0 male, 1 female), af, lvh, bbb (0/1)
    and the latent traits documented in :mod:`pclr_jax.data.synthetic.traits`."""
    return sample_patient_model(config, np.arange(config.n_patients)).traits


@functools.lru_cache(maxsize=2)
def noise_bank(seed: int) -> np.ndarray:
    """``(NOISE_BANK_SIZE,)`` float32 standard-normal samples shared by the ECGs of a seed."""
    sequence = np.random.SeedSequence(seed, spawn_key=(NOISE_BANK_STREAM,))
    bank = np.random.Generator(np.random.PCG64(sequence)).standard_normal(
        NOISE_BANK_SIZE, dtype=np.float32
    )
    bank.flags.writeable = False
    return bank


def _split(values: np.ndarray, blocks: dict[str, int]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, size in blocks.items():
        out[name] = values[:, start] if size == 1 else values[:, start : start + size]
        start += size
    return out


def _recording_draws(config: SyntheticConfig, patient_ids: np.ndarray):
    """Per-ECG random numbers from each patient's recording stream."""
    n_normals = sum(_NORMAL_BLOCKS.values()) + config.beats_capacity
    n_uniforms = sum(_UNIFORM_BLOCKS.values())
    low, high = config.ecgs_range
    owners, ecg_index, normals, uniforms = [], [], [], []
    for row, patient_id in enumerate(patient_ids):
        rng = patient_rng(config.seed, RECORDING_STREAM, patient_id)
        count = int(rng.integers(low, high + 1))
        owners.append(np.full(count, row))
        ecg_index.append(np.arange(count))
        normals.append(rng.standard_normal((count, n_normals)))
        uniforms.append(rng.random((count, n_uniforms)))
    owners, ecg_index = np.concatenate(owners), np.concatenate(ecg_index)
    normals, uniforms = np.concatenate(normals), np.concatenate(uniforms)
    beats = normals[:, -config.beats_capacity :]
    z = _split(normals[:, : -config.beats_capacity], _NORMAL_BLOCKS)
    return owners, ecg_index, z, _split(uniforms, _UNIFORM_BLOCKS), beats


def _log_uniform(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = np.log(bounds[0]), np.log(bounds[1])
    return np.exp(low + (high - low) * u)


def _posture(angles_deg: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations ``R`` of a row-vector dipole (``d @ R``) for body position: in the
    frontal plane (x towards y) by ``angles_deg[:, 0]``, then about the vertical axis (x towards z)
    by ``angles_deg[:, 1]``."""
    a, b = np.deg2rad(angles_deg).T
    zero, one = np.zeros_like(a), np.ones_like(a)
    frontal = np.stack(
        [np.cos(a), np.sin(a), zero, -np.sin(a), np.cos(a), zero, zero, zero, one], axis=1
    )
    vertical = np.stack(
        [np.cos(b), zero, np.sin(b), zero, one, zero, -np.sin(b), zero, np.cos(b)], axis=1
    )
    return frontal.reshape(-1, 3, 3) @ vertical.reshape(-1, 3, 3)


def sample_recordings(
    config: SyntheticConfig, model: PatientModel
) -> tuple[RenderInputs, pd.DataFrame]:
    """Draws every ECG of the patients in ``model`` (their recording streams).

    Returns:
        ``(inputs, metadata)``: the :class:`RenderInputs` of the ``N`` ECGs and one metadata row
        per ECG (:data:`ECG_COLUMNS`), patients in ``model`` order.
    """
    owner, ecg_index, z, u, beat_z = _recording_draws(config, model.traits["patient_id"].to_numpy())
    visits = None
    if visits_enabled(config):
        model, visits = visit_models(config, model, owner, ecg_index)
        owner = np.arange(len(owner))
    traits = model.traits
    t = traits.iloc[owner].reset_index(drop=True)
    af = t["af"].to_numpy()[:, None]

    rate = t["heart_rate_bpm"].to_numpy() * np.exp(
        np.where(af[:, 0] == 1, 0.08, 0.07) * z["heart_rate"]
    )
    rr0 = 60.0 / np.clip(rate, 40, 150)
    breathing_hz = 0.15 + 0.2 * u["breathing_hz"]
    beat = np.arange(config.beats_capacity)
    rsa = (t["rsa_fraction"].to_numpy() * np.exp(0.2 * z["rsa"]))[:, None]
    sinus_rr = 1 + rsa * np.sin(
        2 * np.pi * breathing_hz[:, None] * rr0[:, None] * beat
        + 2 * np.pi * u["breathing_phase"][:, None]
    )
    sinus_rr = sinus_rr * np.exp(0.012 * beat_z)
    sigma = t["rr_irregularity"].to_numpy()[:, None]
    af_rr = np.exp(sigma * beat_z - 0.5 * sigma**2)
    rr = np.clip(rr0[:, None] * np.where(af == 1, af_rr, sinus_rr), *RR_RANGE_S)
    start = -(1 + u["first_beat"]) * rr[:, 0]
    r_peak = start[:, None] + np.concatenate(
        [np.zeros((len(rr), 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1
    )
    rr_before = np.concatenate([rr[:, :1], rr[:, :-1]], axis=1)
    qt_ms = t["qtc_ms"].to_numpy()[:, None] * np.cbrt(rr_before)
    t_peak_s = (qt_ms + model.t_peak_offset_ms[owner][:, None]) / 1000.0

    inside = (r_peak >= 0) & (r_peak < config.duration_s)
    first = np.where(inside, r_peak, np.inf).min(axis=1)
    last = np.where(inside, r_peak, -np.inf).max(axis=1)
    heart_rate = 60.0 * (inside.sum(axis=1) - 1) / (last - first)

    jitter = z["electrodes"].reshape(-1, 3, _LEADS) * np.array([0.01] * 2 + [0.06] * 6)
    jitter = jitter * config.electrode_jitter_scale
    lead_matrix = _posture(5.0 * z["posture"]) @ (model.lead_matrix[owner] + jitter)
    if visits is not None:
        lead_matrix = apply_lead_faults(lead_matrix, visits)
    gain = np.exp(0.05 * z["gain"][:, None] + 0.03 * z["lead_gain"])
    wave_leads = np.matmul(model.wave_vector_mv[owner], lead_matrix) * gain[:, None, :]
    f_leads = np.matmul(model.f_wave_vector_mv[owner][:, None], lead_matrix)[:, 0] * gain
    f_wave = np.stack(
        [
            t["f_wave_hz"].to_numpy() * np.exp(0.05 * z["f_wave_hz"]),
            2 * np.pi * u["f_phase"],
            0.1 + 0.3 * u["fm_hz"],
            np.full(len(owner), 3.0),
            2 * np.pi * u["fm_phase"],
            0.2 + 0.6 * u["am_hz"],
            np.full(len(owner), 0.5),
            2 * np.pi * u["am_phase"],
        ],
        axis=1,
    )

    wander_mv = _log_uniform(u["wander_mv"], config.baseline_wander_mv)
    powerline_mv = _log_uniform(u["powerline_mv"], config.powerline_mv) * (
        u["powerline_on"] < config.powerline_probability
    )
    tone_leads = (
        np.concatenate(
            [
                wander_mv[:, None, None] * z["wander"].reshape(-1, 2, _LEADS),
                powerline_mv[:, None, None] * z["powerline"][:, None, :],
            ],
            axis=1,
        )
        * gain[:, None, :]
    )
    tone_hz = np.stack(
        [breathing_hz, 0.03 + 0.07 * u["drift_hz"], np.where(u["powerline_hz"] < 0.5, 50.0, 60.0)],
        axis=1,
    )
    tone_phase = (
        2 * np.pi * np.stack([u["breathing_phase"], u["drift_phase"], u["powerline_phase"]], axis=1)
    )
    noise_mv = _log_uniform(u["noise_mv"], config.noise_mv)
    noise_std = noise_mv[:, None] * np.exp(0.25 * z["noise"])
    noise_offset = (u["noise_offset"] * (NOISE_BANK_SIZE - config.n_samples + 1)).astype(np.int64)

    inputs = RenderInputs(
        r_peak_s=r_peak,
        t_peak_s=t_peak_s,
        wave_center_s=model.wave_center_ms[owner] / 1000.0,
        wave_width_s=model.wave_width_ms[owner] / 1000.0,
        wave_leads_mv=wave_leads,
        f_wave_leads_mv=f_leads,
        f_wave=f_wave,
        tone_leads_mv=tone_leads,
        tone_hz=tone_hz,
        tone_phase=tone_phase,
        noise_offset=noise_offset,
        noise_std_mv=noise_std,
    )
    patient_id = t["patient_id"].to_numpy()
    metadata = pd.DataFrame(
        {
            "record_id": [
                f"synthetic_{p:07d}_{i:03d}" for p, i in zip(patient_id, ecg_index, strict=True)
            ],
            "patient_id": patient_id,
            "ecg_index": ecg_index,
            "heart_rate_bpm": heart_rate,
            "age": t["age"].to_numpy(),
            "sex": t["sex"].to_numpy(),
            "af": t["af"].to_numpy(),
            "lvh": t["lvh"].to_numpy(),
            "bbb": t["bbb"].to_numpy(),
            "noise_std_mv": noise_mv,
            "baseline_wander_mv": wander_mv,
            "years_since_first": 0.0 if visits is None else visits.years_since_first,
            "limb_reversal": 0 if visits is None else visits.limb_reversal,
            "precordial_swap": -1 if visits is None else visits.precordial_swap,
        }
    )
    return inputs, metadata


def iter_synthetic_chunks(
    config: SyntheticConfig, chunk_patients: int = 256
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Generates the data set, ``chunk_patients`` patients at a time.

    Yields:
        ``(ecgs, metadata)``: ``ecgs`` ``(N, n_samples, 12)`` float32 in mV, leads in
        ``STANDARD_LEADS`` order (I, II, III, aVR, aVL, aVF, V1-V6), all ECGs of the chunk's
        patients; ``metadata`` one row per ECG with the columns :data:`ECG_COLUMNS` (record_id,
        patient_id, ecg_index, heart_rate_bpm, age, sex, af, lvh, bbb, noise_std_mv,
        baseline_wander_mv). The values do not depend on ``chunk_patients``.
    """
    if chunk_patients < 1:
        raise ValueError(f"chunk_patients must be >= 1, got {chunk_patients}")
    bank = noise_bank(config.seed)
    for start in range(0, config.n_patients, chunk_patients):
        ids = np.arange(start, min(start + chunk_patients, config.n_patients))
        inputs, metadata = sample_recordings(config, sample_patient_model(config, ids))
        ecgs = np.empty((len(inputs), config.n_samples, 12), np.float32)
        for lo in range(0, len(inputs), RENDER_BATCH):
            rows = slice(lo, lo + RENDER_BATCH)
            render(inputs[rows], config.n_samples, config.sampling_rate, bank, out=ecgs[rows])
        yield ecgs, metadata


def generate(config: SyntheticConfig, chunk_patients: int = 256) -> tuple[np.ndarray, pd.DataFrame]:
    """The whole data set in memory: :func:`iter_synthetic_chunks` concatenated."""
    chunks = list(iter_synthetic_chunks(config, chunk_patients))
    if not chunks:
        return np.empty((0, config.n_samples, 12), np.float32), pd.DataFrame(columns=ECG_COLUMNS)
    return (
        np.concatenate([c[0] for c in chunks]),
        pd.concat([c[1] for c in chunks], ignore_index=True),
    )


__all__ = [
    "ECG_COLUMNS",
    "WAVES",
    "generate",
    "iter_synthetic_chunks",
    "noise_bank",
    "sample_patients",
    "sample_recordings",
]
