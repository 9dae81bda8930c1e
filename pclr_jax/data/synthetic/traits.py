"""Synthetic patients: latent traits and each patient's cardiac dipole model.

Every patient draws a fixed number of random numbers from its own stream (:func:`patient_rng`), so a
patient's traits depend only on the seed and its id, never on which other patients are generated.

Traits and how they depend on age and sex (``dec`` = (age - 60 years) / 10, ``female`` = 0/1,
``z`` a standard normal of the patient; clips in brackets):

=====================  =========================================================================
age (years)            N(age_mean, age_std) clipped to age_range (defaults 58, 17, [18, 95]).
sex                    1 (female) with probability female_fraction, else 0 (male).
af, lvh, bbb           logistic in age and sex: log-odds per decade +0.7 / +0.35 / +0.5, male
                       +0.4 / +0.6 / +0.4; the intercept is solved so that the expected prevalence
                       over the age and sex distribution equals the configured one.
bbb_type               'right' with probability right_bbb_fraction, else 'left' ('none' if no BBB).
lvh_strain             with probability lvh_strain_fraction among LVH patients (T inversion).
heart_rate_bpm         sinus: 70 + 4 female - 1.5 dec + 9 z [45, 110]; AF (mean ventricular rate):
                       95 + 4 female + 14 z [60, 140].
pr_ms                  158 + 6 dec - 6 female + 16 z [110, 240] (NaN with AF: no P waves).
qrs_duration_ms        95 - 7 female + 1.5 dec + 7 z [74, 118], +6 with LVH; BBB: 142 + 12 z
                       [122, 180].
qtc_ms                 Fridericia-corrected QT: 405 + 16 female + 4 dec + 14 z [360, 480], plus
                       0.4 ms per ms of QRS beyond 95 ms with BBB.
qrs_axis_deg           frontal-plane angle of the R dipole (0 = left, +90 = feet): 35 - 6 dec +
                       6 female + 16 z - 12 lvh - 20 left-BBB [-70, 110]. Through Dower's
                       matrix the limb leads show it about 20 degrees more vertical (35 -> ~+55).
rotation_deg           12 z: rotation of the ventricular dipole about the vertical axis, positive
                       from left towards the back (moves the precordial R/S transition).
qrs_voltage            relative QRS size exp(0.16 z) (1 - 0.13 female) (1 - 0.035 dec).
t_voltage              relative T size exp(0.2 z) (1 - 0.18 female) (1 - 0.04 dec).
lvh_voltage_factor     R-wave gain with LVH, uniform in lvh_voltage_gain (default [1.45, 1.9];
                       1 without).
rsa_fraction           respiratory sinus arrhythmia, RR half-amplitude as a fraction of RR:
                       0.045 exp(-0.3 dec + 0.35 z) [0, 0.15]; 0 with AF.
rr_irregularity        AF only: log-normal sigma of successive RR intervals, uniform [0.14, 0.28].
f_wave_mv, f_wave_hz   AF only (0 otherwise): fibrillatory-wave dipole size uniform [0.02, 0.10]
                       mV and rate uniform [5, 8] Hz.
=====================  =========================================================================

The dipole of a reference patient (wave peak vectors as size mV, frontal angle, elevation towards
the back, in degrees; Gaussian widths and centres in ms; ``w`` = QRS duration / 95 ms):

=====  ================  ================  ==========  =============  ======================
wave   size (mV)         frontal angle     elevation   width          centre
=====  ================  ================  ==========  =============  ======================
P      0.14              55                -15         22             -(PR - 10) from next R
Q      0.18 qrs_voltage  axis + 160        -40         9 w            -24 w from next R
R      1.45 qrs_voltage  axis              +25         11 w           0 from nearest R
S      0.60 qrs_voltage  axis + 175        +55         10 w           +25 w from previous R
T1     0.17 t_voltage    axis - 12         -30         55             -45 from T peak
T2     0.28 t_voltage    axis - 12         -30         32             0 from T peak
=====  ================  ================  ==========  =============  ======================

The T peak lies at ``QT - 0.45 QRS - 2.5 width(T2)`` after the R peak, with QT = QTc RR^(1/3)
(Fridericia) of the preceding RR interval. Conditions change this picture: LVH multiplies R by
lvh_voltage_factor (S by 1 + 0.7 (factor - 1)) and turns it 8 degrees up and 12 towards the back;
LVH strain points T at axis + 170 degrees, 20 degrees back (lateral T inversion); right BBB adds a
late rightward-anterior wave (0.65 mV, frontal 195, elevation -45, centre 0.40 QRS, width 0.12 QRS;
the terminal R' of V1 and wide S of I and V6) and turns T 10 degrees back; left BBB removes the
septal Q, widens R 1.5 times and turns it 35 degrees back, adds a late leftward-posterior wave
(0.9 mV, axis - 5, +35, centre 0.30 QRS, width 0.12 QRS) and makes T discordant (axis + 165, -25);
AF removes P and adds fibrillatory waves (frontal 70 + 20 z, elevation -45). The ventricular waves
are then rotated by rotation_deg. Finally each patient gets a shape signature: every wave's size
times exp(0.12 z), angles + 8 z degrees, width times exp(0.08 z), centre + 4 z ms, and its own lead
matrix (Dower's coefficients times exp(0.08 z) plus 0.04 z: torso shape and electrode positions).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from pclr_jax.data.synthetic.config import SyntheticConfig
from pclr_jax.data.synthetic.render import DOWER, WAVES

TRAIT_STREAM = 0
RECORDING_STREAM = 1
NOISE_BANK_STREAM = 2
FAMILY_STREAM = 4  # 3 is the visit stream of pclr_jax.data.synthetic.visits
FAMILY_SHAPE_STREAM = 5

NORMALS = (
    "age",
    "heart_rate",
    "pr",
    "qrs",
    "qtc",
    "axis",
    "rotation",
    "qrs_voltage",
    "t_voltage",
    "rsa",
    "f_axis",
)
UNIFORMS = (
    "sex",
    "af",
    "lvh",
    "bbb",
    "bbb_type",
    "lvh_strain",
    "lvh_factor",
    "rr_irregularity",
    "f_wave_mv",
    "f_wave_hz",
)
_SIGNATURE_SHAPE = (5, len(WAVES))  # size, frontal angle, elevation, width, centre
_LEAD_SHAPE = (2, 3, 8)  # multiplicative and additive perturbation of DOWER
N_NORMALS = len(NORMALS) + int(np.prod(_SIGNATURE_SHAPE)) + int(np.prod(_LEAD_SHAPE))

# Log-odds effects of one decade of age and of male sex on each condition.
_CONDITION_EFFECTS = {"af": (0.7, 0.4), "lvh": (0.35, 0.6), "bbb": (0.5, 0.4)}

# Reference wave geometry, in WAVES order (see the module docstring).
_SIZE_MV = np.array([0.14, 0.18, 1.45, 0.60, 0.0, 0.17, 0.28])
_ELEVATION_DEG = np.array([-15.0, -40.0, 25.0, 55.0, 0.0, -30.0, -30.0])
_FRONTAL_FROM_AXIS_DEG = np.array([0.0, 160.0, 0.0, 175.0, 0.0, -12.0, -12.0])
_T_WAVES = np.array([w in ("T1", "T2") for w in WAVES])
_VENTRICULAR = np.array([w != "P" for w in WAVES])
P, Q, R, S, LATE, T1, T2 = range(len(WAVES))


@dataclasses.dataclass(frozen=True)
class PatientModel:
    """The dipole model of ``P`` patients (times in ms, amplitudes in mV).

    Attributes:
        traits: one row per patient (the columns of the module docstring's trait table).
        wave_center_ms: ``(P, 7)`` centre of each wave of ``WAVES`` from its time origin.
        wave_width_ms: ``(P, 7)`` Gaussian standard deviation of each wave.
        wave_vector_mv: ``(P, 7, 3)`` peak dipole of each wave (Frank x left, y feet, z back).
        t_peak_offset_ms: ``(P,)`` T peak time after the R peak minus QT.
        f_wave_vector_mv: ``(P, 3)`` fibrillatory-wave dipole (zero without AF).
        lead_matrix: ``(P, 3, 8)`` dipole to the independent leads I, II, V1-V6.
        normals, uniforms: ``(P, N_NORMALS)`` and ``(P, len(UNIFORMS))``: the draws this model was
            built from (:func:`model_from_draws`), so later visits can move them.
    """

    traits: pd.DataFrame
    wave_center_ms: np.ndarray
    wave_width_ms: np.ndarray
    wave_vector_mv: np.ndarray
    t_peak_offset_ms: np.ndarray
    f_wave_vector_mv: np.ndarray
    lead_matrix: np.ndarray
    normals: np.ndarray
    uniforms: np.ndarray


def patient_rng(seed: int, stream: int, patient_id: int) -> np.random.Generator:
    """Random stream ``stream`` of patient ``patient_id``, independent of every other patient."""
    sequence = np.random.SeedSequence(seed, spawn_key=(stream, int(patient_id)))
    return np.random.Generator(np.random.PCG64(sequence))


def _draws(seed: int, patient_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    normals = np.empty((len(patient_ids), N_NORMALS))
    uniforms = np.empty((len(patient_ids), len(UNIFORMS)))
    for i, patient_id in enumerate(patient_ids):
        rng = patient_rng(seed, TRAIT_STREAM, patient_id)
        normals[i] = rng.standard_normal(N_NORMALS)
        uniforms[i] = rng.random(len(UNIFORMS))
    return normals, uniforms


@functools.lru_cache(maxsize=64)
def _prevalence_intercept(
    prevalence: float,
    decade_effect: float,
    male_effect: float,
    female_fraction: float,
    age_mean: float,
    age_std: float,
    age_range: tuple[float, float],
) -> float:
    """Log-odds intercept at 60 years (female) giving ``prevalence`` over the whole population."""
    if prevalence in (0.0, 1.0):
        return -np.inf if prevalence == 0.0 else np.inf
    z = np.linspace(-8.0, 8.0, 4001)
    weight = np.exp(-0.5 * z**2)
    weight /= weight.sum()
    decades = (np.clip(age_mean + age_std * z, *age_range) - 60.0) / 10.0

    def excess(intercept: float) -> float:
        log_odds = intercept + decade_effect * decades
        risk = female_fraction * expit(log_odds) + (1 - female_fraction) * expit(
            log_odds + male_effect
        )
        return float(risk @ weight) - prevalence

    return brentq(excess, -60.0, 60.0, xtol=1e-10)


def _unit_vectors(frontal_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """``(..., 3)`` Frank-axis unit vectors at a frontal angle and an elevation towards the back."""
    a, e = np.deg2rad(frontal_deg), np.deg2rad(elevation_deg)
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)


def family_of(config: SyntheticConfig, patient_ids: np.ndarray) -> np.ndarray:
    """``(P,)`` family id of each patient (uniform over ``config.morphology_families``)."""
    return np.array(
        [
            patient_rng(config.seed, FAMILY_STREAM, pid).integers(config.morphology_families)
            for pid in patient_ids
        ],
        dtype=np.int64,
    )


def family_mix(config: SyntheticConfig, patient_ids: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """``(P, N_NORMALS)``: the patients' normals mixed with their family's (all but age)."""
    families = family_of(config, patient_ids)
    shared = np.stack(
        [
            patient_rng(config.seed, FAMILY_SHAPE_STREAM, int(f)).standard_normal(N_NORMALS)
            for f in families
        ]
    ).reshape(len(patient_ids), N_NORMALS)
    w = config.family_weight
    mixed = np.sqrt(w) * shared + np.sqrt(1.0 - w) * normals
    age = NORMALS.index("age")
    mixed[:, age] = normals[:, age]
    return mixed


def sample_patient_model(config: SyntheticConfig, patient_ids: np.ndarray) -> PatientModel:
    """Draws the traits and dipole models of ``patient_ids`` (deterministic per seed and id).

    With ``config.morphology_families`` the shape draws (every normal but age) are mixed with
    those of the patient's family (:func:`family_mix`)."""
    patient_ids = np.asarray(patient_ids, dtype=np.int64)
    normals, uniforms = _draws(config.seed, patient_ids)
    if config.morphology_families:
        normals = family_mix(config, patient_ids, normals)
    return model_from_draws(config, patient_ids, normals, uniforms)


def model_from_draws(
    config: SyntheticConfig,
    patient_ids: np.ndarray,
    normals: np.ndarray,
    uniforms: np.ndarray,
    years_since_first: np.ndarray | float = 0.0,
) -> PatientModel:
    """The dipole models of rows of draws: ``normals`` ``(R, N_NORMALS)`` and ``uniforms``
    ``(R, len(UNIFORMS))``, ``patient_ids`` ``(R,)``. ``years_since_first`` ``(R,)`` is added to
    the age drawn for the first ECG (ages then move every age-dependent trait and risk)."""
    z = dict(zip(NORMALS, normals[:, : len(NORMALS)].T, strict=True))
    u = dict(zip(UNIFORMS, uniforms.T, strict=True))
    split = len(NORMALS) + int(np.prod(_SIGNATURE_SHAPE))
    signature = normals[:, len(NORMALS) : split].reshape(-1, *_SIGNATURE_SHAPE)
    lead_noise = normals[:, split:].reshape(-1, *_LEAD_SHAPE)

    age = np.round(np.clip(config.age_mean + config.age_std * z["age"], *config.age_range), 1)
    if np.any(years_since_first):
        age = np.round(age + years_since_first, 1)
    female = (u["sex"] < config.female_fraction).astype(np.int64)
    dec = (age - 60.0) / 10.0

    def condition(name: str, prevalence: float) -> np.ndarray:
        decade_effect, male_effect = _CONDITION_EFFECTS[name]
        intercept = _prevalence_intercept(
            prevalence,
            decade_effect,
            male_effect,
            config.female_fraction,
            config.age_mean,
            config.age_std,
            tuple(config.age_range),
        )
        risk = expit(intercept + decade_effect * dec + male_effect * (1 - female))
        return (u[name] < risk).astype(np.int64)

    af = condition("af", config.af_prevalence)
    lvh = condition("lvh", config.lvh_prevalence)
    bbb = condition("bbb", config.bbb_prevalence)
    right = bbb * (u["bbb_type"] < config.right_bbb_fraction)
    left = bbb - right
    strain = lvh * (u["lvh_strain"] < config.lvh_strain_fraction)
    gain_low, gain_high = config.lvh_voltage_gain
    lvh_factor = np.where(lvh == 1, gain_low + (gain_high - gain_low) * u["lvh_factor"], 1.0)
    if config.lvh_progression_per_year and np.any(years_since_first):
        lvh_factor = np.minimum(
            lvh_factor + lvh * config.lvh_progression_per_year * years_since_first, 2.4
        )

    heart_rate = np.where(
        af == 1,
        np.clip(95 + 4 * female + 14 * z["heart_rate"], 60, 140),
        np.clip(70 + 4 * female - 1.5 * dec + 9 * z["heart_rate"], 45, 110),
    )
    pr = np.clip(158 + 6 * dec - 6 * female + 16 * z["pr"], 110, 240)
    qrs = np.where(
        bbb == 1,
        np.clip(142 + 12 * z["qrs"], 122, 180),
        np.clip(95 - 7 * female + 1.5 * dec + 7 * z["qrs"], 74, 118) + 6 * lvh,
    )
    qtc = np.clip(405 + 16 * female + 4 * dec + 14 * z["qtc"], 360, 480)
    qtc = qtc + 0.4 * bbb * np.maximum(qrs - 95, 0)
    axis = np.clip(35 - 6 * dec + 6 * female + 16 * z["axis"] - 12 * lvh - 20 * left, -70, 110)
    rotation = 12 * z["rotation"]
    qrs_voltage = np.exp(0.16 * z["qrs_voltage"]) * (1 - 0.13 * female) * (1 - 0.035 * dec)
    t_voltage = np.exp(0.2 * z["t_voltage"]) * (1 - 0.18 * female) * (1 - 0.04 * dec)
    rsa = np.where(af == 1, 0.0, np.clip(0.045 * np.exp(-0.3 * dec + 0.35 * z["rsa"]), 0, 0.15))
    rr_irregularity = af * (0.14 + 0.14 * u["rr_irregularity"])
    f_wave_mv = af * (0.02 + 0.08 * u["f_wave_mv"])
    f_wave_hz = af * (5.0 + 3.0 * u["f_wave_hz"])

    # Wave sizes, directions, widths and centres (WAVES order), then conditions, then signature.
    n = len(patient_ids)
    w = np.where(bbb == 1, 1.1, qrs / 95.0)
    size = np.tile(_SIZE_MV, (n, 1))
    size[:, P] *= 1 - af
    size[:, Q] *= qrs_voltage * (1 - left)
    size[:, R] *= qrs_voltage * lvh_factor
    size[:, S] *= qrs_voltage * (1 + 0.7 * (lvh_factor - 1))
    size[:, LATE] = qrs_voltage * (0.65 * right + 0.9 * left)
    size[:, T1:] *= t_voltage[:, None] * np.where(strain == 1, 0.9, 1.0)[:, None]
    frontal = axis[:, None] + _FRONTAL_FROM_AXIS_DEG
    frontal[:, P] = 55.0
    frontal[:, R] -= 8 * lvh
    frontal[:, LATE] = np.where(right == 1, 195.0, axis - 5)
    t_frontal = axis + np.select([strain == 1, left == 1], [170.0, 165.0], -12.0)
    frontal[:, T1:] = t_frontal[:, None]
    elevation = np.tile(_ELEVATION_DEG, (n, 1))
    elevation[:, R] += 12 * lvh + 35 * left
    elevation[:, LATE] = np.where(right == 1, -45.0, 35.0)
    t_elevation = np.select([strain == 1, left == 1, right == 1], [20.0, -25.0, -20.0], -30.0)
    elevation[:, T1:] = t_elevation[:, None]
    width = np.stack(
        [
            np.full(n, 22.0),
            9 * w,
            11 * w * np.where(left == 1, 1.5, 1.0),
            10 * w,
            0.12 * qrs,
            np.full(n, 55.0),
            np.full(n, 32.0),
        ],
        axis=1,
    )
    center = np.stack(
        [-(pr - 10), -24 * w, np.zeros(n), 25 * w, np.where(right == 1, 0.40, 0.30) * qrs],
        axis=1,
    )
    center = np.concatenate([center, np.tile([-45.0, 0.0], (n, 1))], axis=1)

    size = size * np.exp(0.12 * signature[:, 0])
    frontal = frontal + 8 * signature[:, 1]
    elevation = elevation + 8 * signature[:, 2]
    width = width * np.exp(0.08 * signature[:, 3])
    center = center + 4 * signature[:, 4]
    t_peak_offset = -0.45 * qrs - 2.5 * width[:, T2]

    vectors = size[..., None] * _unit_vectors(frontal, elevation)
    turn = np.deg2rad(rotation)[:, None]
    x, z_axis = vectors[..., 0].copy(), vectors[..., 2].copy()
    vectors[..., 0] = np.where(_VENTRICULAR, x * np.cos(turn) - z_axis * np.sin(turn), x)
    vectors[..., 2] = np.where(_VENTRICULAR, x * np.sin(turn) + z_axis * np.cos(turn), z_axis)
    f_vector = f_wave_mv[:, None] * _unit_vectors(70 + 20 * z["f_axis"], np.full(n, -45.0))
    lead_matrix = DOWER * np.exp(0.08 * lead_noise[:, 0]) + 0.04 * lead_noise[:, 1]

    traits = pd.DataFrame(
        {
            "patient_id": patient_ids,
            "age": age,
            "sex": female,
            "af": af,
            "lvh": lvh,
            "bbb": bbb,
            "bbb_type": np.select([right == 1, left == 1], ["right", "left"], "none"),
            "lvh_strain": strain,
            "heart_rate_bpm": heart_rate,
            "pr_ms": np.where(af == 1, np.nan, pr),
            "qrs_duration_ms": qrs,
            "qtc_ms": qtc,
            "qrs_axis_deg": axis,
            "rotation_deg": rotation,
            "qrs_voltage": qrs_voltage,
            "t_voltage": t_voltage,
            "lvh_voltage_factor": lvh_factor,
            "rsa_fraction": rsa,
            "rr_irregularity": rr_irregularity,
            "f_wave_mv": f_wave_mv,
            "f_wave_hz": f_wave_hz,
        }
    )
    return PatientModel(
        traits=traits,
        wave_center_ms=center,
        wave_width_ms=width,
        wave_vector_mv=vectors,
        t_peak_offset_ms=t_peak_offset,
        f_wave_vector_mv=f_vector,
        lead_matrix=lead_matrix,
        normals=normals,
        uniforms=uniforms,
    )
