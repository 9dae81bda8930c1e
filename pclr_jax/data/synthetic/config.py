"""The knobs of a synthetic ECG data set (:class:`SyntheticConfig`): size, sampling, population,
recording and, for the realistic configs, visits and families. Pure data: no random numbers here."""

from __future__ import annotations

import dataclasses
import math
import numbers

RR_RANGE_S = (0.3, 2.0)  # shortest and longest RR interval, seconds


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic data set: its size, sampling and the population and recording knobs.

    Attributes:
        n_patients: number of patients (ids 0 .. n_patients - 1).
        ecgs_per_patient: ECGs per patient: an int, or an inclusive (min, max) range drawn
            uniformly per patient.
        n_samples: samples per ECG; the sampling rate is n_samples / duration_s (409.6 Hz).
        duration_s: length of each ECG in seconds.
        seed: the data set's seed.
        female_fraction: probability that a patient is female.
        age_mean, age_std, age_range: the normal age distribution (years) and its clip.
        af_prevalence, lvh_prevalence, bbb_prevalence: expected fraction of patients with atrial
            fibrillation, left ventricular hypertrophy and bundle-branch block (risk rises with age
            and in men, see :mod:`pclr_jax.data.synthetic.traits`).
        right_bbb_fraction: fraction of bundle-branch blocks that are right (the rest left).
        lvh_strain_fraction: fraction of LVH patients with strain (T-wave inversion).
        lvh_voltage_gain: (min, max) of the R-wave gain of an LVH patient (uniform per patient; S
            grows by 0.7 of the gain's excess). The original (1.45, 1.9) puts nearly every LVH
            patient above normal voltage variation (a linear probe of a random encoder scores LVH
            at AUROC ~0.985); a smaller gain overlaps with it, as real voltage criteria do.
        noise_mv: (min, max) of the per-ECG white-noise standard deviation, mV (log-uniform).
        baseline_wander_mv: (min, max) of the per-ECG baseline-wander amplitude, mV (log-uniform).
        powerline_probability: probability that an ECG has 50/60 Hz mains hum.
        powerline_mv: (min, max) of the mains-hum amplitude, mV (log-uniform).
        electrode_jitter_scale: multiplies the per-recording lead-matrix jitter (electrode
            placement) of the table above.
        morphology_families, family_weight, visit_interval_years, trait_drift_per_year,
            visit_jitter, heart_rate_jitter, condition_drift_per_year, condition_jitter,
            lvh_progression_per_year, limb_reversal_rate, precordial_swap_rate: families of
            look-alike patients, visits years apart, conditions that change between ECGs and
            electrode faults; all off (0) by default, see :mod:`pclr_jax.data.synthetic.visits`.
    """

    n_patients: int
    ecgs_per_patient: int | tuple[int, int]
    n_samples: int = 4096
    duration_s: float = 10.0
    seed: int = 0
    female_fraction: float = 0.5
    age_mean: float = 58.0
    age_std: float = 17.0
    age_range: tuple[float, float] = (18.0, 95.0)
    af_prevalence: float = 0.10
    lvh_prevalence: float = 0.15
    bbb_prevalence: float = 0.08
    right_bbb_fraction: float = 0.6
    lvh_strain_fraction: float = 0.4
    lvh_voltage_gain: tuple[float, float] = (1.45, 1.9)
    noise_mv: tuple[float, float] = (0.005, 0.04)
    baseline_wander_mv: tuple[float, float] = (0.02, 0.25)
    powerline_probability: float = 0.3
    powerline_mv: tuple[float, float] = (0.005, 0.03)
    electrode_jitter_scale: float = 1.0
    morphology_families: int = 0
    family_weight: float = 0.0
    visit_interval_years: float = 0.0
    trait_drift_per_year: float = 0.0
    visit_jitter: float = 0.0
    heart_rate_jitter: float = 0.0
    condition_drift_per_year: float = 0.0
    condition_jitter: float = 0.0
    lvh_progression_per_year: float = 0.0
    limb_reversal_rate: float = 0.0
    precordial_swap_rate: float = 0.0

    def __post_init__(self):
        if self.n_patients < 0:
            raise ValueError(f"n_patients must be >= 0, got {self.n_patients}")
        low, high = self.ecgs_range
        if not 1 <= low <= high:
            raise ValueError(
                f"ecgs_per_patient must be >= 1 (min <= max), got {self.ecgs_per_patient}"
            )
        if self.n_samples < 16 or self.duration_s < 2 * RR_RANGE_S[1]:
            raise ValueError(
                f"need >= 16 samples and >= {2 * RR_RANGE_S[1]} s (two beats at the slowest rate),"
                f" got {self.n_samples} samples in {self.duration_s} s"
            )
        for name in (
            "female_fraction",
            "af_prevalence",
            "lvh_prevalence",
            "bbb_prevalence",
            "right_bbb_fraction",
            "lvh_strain_fraction",
            "powerline_probability",
            "family_weight",
            "limb_reversal_rate",
            "precordial_swap_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in (
            "age_range",
            "noise_mv",
            "baseline_wander_mv",
            "powerline_mv",
            "lvh_voltage_gain",
        ):
            low_value, high_value = getattr(self, name)
            if not 0 < low_value <= high_value:
                raise ValueError(f"{name} must be 0 < min <= max, got {getattr(self, name)}")
        for name in (
            "electrode_jitter_scale",
            "morphology_families",
            "visit_interval_years",
            "trait_drift_per_year",
            "visit_jitter",
            "heart_rate_jitter",
            "condition_drift_per_year",
            "condition_jitter",
            "lvh_progression_per_year",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def ecgs_range(self) -> tuple[int, int]:
        """(min, max) ECGs per patient."""
        if isinstance(self.ecgs_per_patient, numbers.Integral):
            return int(self.ecgs_per_patient), int(self.ecgs_per_patient)
        low, high = self.ecgs_per_patient
        return int(low), int(high)

    @property
    def sampling_rate(self) -> float:
        """Hz."""
        return self.n_samples / self.duration_s

    @property
    def beats_capacity(self) -> int:
        """R peaks drawn per ECG: enough for the shortest RR from before 0 s to past the end."""
        low, high = RR_RANGE_S
        return math.ceil((self.duration_s + 2 * high) / low) + 2
