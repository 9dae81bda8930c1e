"""``pclr_synthetic``: the generated multi-patient data set
(:mod:`pclr_jax.data.synthetic.generator`).

Needs no download. Splits are by patient (hash of the patient id, 80/10/10). Every ECG is kept
(there are no bad records); the labels are the generator's ground truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pclr_jax.data import ingest
from pclr_jax.data.builders.base import ECGBuilder, ECGConfig, Label
from pclr_jax.data.synthetic import generator as synthetic
from pclr_jax.data.synthetic.config import SyntheticConfig
from pclr_jax.data.synthetic.render import render
from pclr_jax.data.synthetic.traits import sample_patient_model

CHUNK_PATIENTS = 256


@dataclasses.dataclass(eq=False)
class SyntheticBuilderConfig(ECGConfig):
    """A synthetic data set's size and realism (see
    :class:`pclr_jax.data.synthetic.generator.SyntheticConfig`; ``realism`` holds the keyword
    arguments of
    its visit, family and electrode-fault knobs, empty for the original configs)."""

    n_patients: int = 2000
    ecgs_per_patient: tuple[int, int] = (2, 4)
    seed: int = 0
    realism: dict[str, Any] = dataclasses.field(default_factory=dict)

    def synthetic_config(self) -> SyntheticConfig:
        return SyntheticConfig(
            n_patients=self.n_patients,
            ecgs_per_patient=tuple(self.ecgs_per_patient),
            n_samples=self.n_samples,
            duration_s=self.duration_s,
            seed=self.seed,
            **self.realism,
        )


REALISTIC = {
    "noise_mv": (0.001, 0.007),
    "baseline_wander_mv": (0.008, 0.1),
    "powerline_probability": 0.1,
    "morphology_families": 40,
    "family_weight": 0.9,
    "visit_interval_years": 1.5,
    "trait_drift_per_year": 0.03,
    "visit_jitter": 0.2,
    "heart_rate_jitter": 0.7,
    "condition_drift_per_year": 0.3,
    "condition_jitter": 0.15,
    "lvh_progression_per_year": 0.05,
    "limb_reversal_rate": 0.02,
    "precordial_swap_rate": 0.02,
}
"""The realism knobs of the ``realistic`` configs, calibrated against PTB-XL (docs/data.md)."""

CALIBRATED = {
    **REALISTIC,
    "family_weight": 0.6,
    "visit_jitter": 0.1,
    "lvh_voltage_gain": (1.1, 1.45),
    "lvh_strain_fraction": 0.3,
}
"""The knobs of the ``calibrated`` configs: ``REALISTIC`` with look-alike families at 60 % and a
per-ECG shape change of 0.1 (the setting that matched PTB-XL's template statistics, docs/data.md),
checked against transfer to real ECGs, and a weaker LVH (R-wave gain 1.1-1.45, strain
in 30 % of LVH patients) so that LVH is not separable by voltage alone."""


WEAK_LVH = {"lvh_voltage_gain": (1.1, 1.45), "lvh_strain_fraction": 0.3}
"""The weaker LVH of the ``calibrated`` configs alone: R-wave gain 1.1-1.45, strain in 30 % of LVH
patients (docs/data.md)."""

DEFAULT_WEAK_LVH = dict(WEAK_LVH)
"""The knobs of the ``default_weak_lvh`` configs: the original generator (no visits, families,
drift or lead faults; the original, noisier recording) with only the weaker LVH of ``CALIBRATED``:
a transfer-calibration candidate testing whether the original configs' simpler patient model is
what transfers better to real ECGs."""

REALISTIC_WEAK_LVH = {**REALISTIC, **WEAK_LVH}
"""The knobs of the ``realistic_weak_lvh`` configs: ``REALISTIC`` (the default job's patient
model and recording) with only the weaker LVH of ``CALIBRATED``: a transfer-calibration candidate
that fixes the default job's saturated LVH task and changes nothing else (docs/data.md, third
round)."""

REALISTIC_STABLE_CONDITIONS = {
    **REALISTIC_WEAK_LVH,
    "condition_drift_per_year": 0.0,
    "condition_jitter": 0.0,
    "lvh_progression_per_year": 0.0,
}
"""The knobs of the ``realistic_stable_conditions`` configs: ``REALISTIC_WEAK_LVH`` with each
patient's conditions (AF, LVH, BBB and its voltage) fixed across their ECGs: a
transfer-calibration candidate testing whether positive pairs that differ in condition, which
teach the encoder to ignore it, are what costs the realistic configs their NORM/HYP probes
(docs/data.md, fourth round). The one candidate that met all four criteria: the default job's
data since."""

REALISTIC_NO_FAMILIES = {
    **REALISTIC_WEAK_LVH,
    "morphology_families": 0,
    "family_weight": 0.0,
}
"""The knobs of the ``realistic_no_families`` configs: ``REALISTIC_WEAK_LVH`` without look-alike
families: a transfer-calibration candidate testing whether hard negatives of one shared
morphology are what costs the realistic configs their NORM/HYP probes (docs/data.md, fourth
round)."""

CALIBRATED_NOISY = {
    **CALIBRATED,
    "noise_mv": SyntheticConfig.noise_mv,
    "baseline_wander_mv": SyntheticConfig.baseline_wander_mv,
}
"""The knobs of the ``calibrated_noisy`` configs: ``CALIBRATED`` with the original configs' white
noise (0.005-0.04 mV) and baseline wander (0.02-0.25 mV), 4 times PTB-XL's: a transfer-calibration
candidate testing whether the original configs' noisier recordings (acting as augmentation) are
what transfers better to real ECGs. Mains hum stays ``REALISTIC``'s (10 % of ECGs)."""


def render_patients(
    config: SyntheticConfig, patient_ids: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every ECG of ``patient_ids``: ``(N, n_samples, 12)`` float32 mV and its metadata rows,
    identical to those :func:`~pclr_jax.data.synthetic.generator.iter_synthetic_chunks` gives."""
    inputs, metadata = synthetic.sample_recordings(
        config, sample_patient_model(config, patient_ids)
    )
    bank = synthetic.noise_bank(config.seed)
    ecgs = np.empty((len(inputs), config.n_samples, 12), np.float32)
    for lo in range(0, len(inputs), synthetic.RENDER_BATCH):
        rows = slice(lo, lo + synthetic.RENDER_BATCH)
        render(inputs[rows], config.n_samples, config.sampling_rate, bank, out=ecgs[rows])
    return ecgs, metadata


class PclrSynthetic(ECGBuilder):
    """Synthetic 12-lead ECGs of patients with latent traits (no download)."""

    name = "pclr_synthetic"
    DESCRIPTION = __doc__
    LABELS: ClassVar = {
        "bbb": Label("int", "bundle-branch block (left or right): 1 yes, 0 no"),
        "heart_rate": Label("float", "heart rate of this ECG from its R peaks, beats per minute"),
    }
    BUILDER_CONFIGS: ClassVar = [
        SyntheticBuilderConfig(
            name="default",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s",
            n_patients=2000,
        ),
        SyntheticBuilderConfig(
            name="small",
            description="600 patients x 2-4 ECGs, 4096 samples over 10 s",
            n_patients=600,
        ),
        SyntheticBuilderConfig(
            name="cpu_default",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s (the default CPU job"
            " until cpu_realistic)",
            n_patients=1500,
            n_samples=1024,
        ),
        SyntheticBuilderConfig(
            name="realistic",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s, calibrated against"
            " PTB-XL: visits years apart, conditions changing, look-alike families, lead faults",
            n_patients=2000,
            realism=REALISTIC,
        ),
        SyntheticBuilderConfig(
            name="cpu_realistic",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s, calibrated against"
            " PTB-XL (the default CPU job until cpu_realistic_stable_conditions)",
            n_patients=1500,
            n_samples=1024,
            realism=REALISTIC,
        ),
        SyntheticBuilderConfig(
            name="calibrated",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s, calibrated against"
            " PTB-XL statistics and transfer to real ECGs, with an unsaturated LVH task",
            n_patients=2000,
            realism=CALIBRATED,
        ),
        SyntheticBuilderConfig(
            name="cpu_calibrated",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s, calibrated against"
            " PTB-XL statistics and transfer to real ECGs, with an unsaturated LVH task",
            n_patients=1500,
            n_samples=1024,
            realism=CALIBRATED,
        ),
        SyntheticBuilderConfig(
            name="default_weak_lvh",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s: the default config's"
            " generator and recording with only the weaker LVH of calibrated (a transfer"
            " candidate)",
            n_patients=2000,
            realism=DEFAULT_WEAK_LVH,
        ),
        SyntheticBuilderConfig(
            name="cpu_default_weak_lvh",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s: cpu_default's"
            " generator and recording with only the weaker LVH of cpu_calibrated (a transfer"
            " candidate)",
            n_patients=1500,
            n_samples=1024,
            realism=DEFAULT_WEAK_LVH,
        ),
        SyntheticBuilderConfig(
            name="calibrated_noisy",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s: calibrated with the"
            " default config's 4x higher white noise and baseline wander (a transfer candidate)",
            n_patients=2000,
            realism=CALIBRATED_NOISY,
        ),
        SyntheticBuilderConfig(
            name="cpu_calibrated_noisy",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s: cpu_calibrated with"
            " cpu_default's 4x higher white noise and baseline wander (a transfer candidate)",
            n_patients=1500,
            n_samples=1024,
            realism=CALIBRATED_NOISY,
        ),
        SyntheticBuilderConfig(
            name="realistic_weak_lvh",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s: realistic with only"
            " the weaker LVH of calibrated (a transfer candidate)",
            n_patients=2000,
            realism=REALISTIC_WEAK_LVH,
        ),
        SyntheticBuilderConfig(
            name="cpu_realistic_weak_lvh",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s: cpu_realistic with"
            " only the weaker LVH of cpu_calibrated (a transfer candidate)",
            n_patients=1500,
            n_samples=1024,
            realism=REALISTIC_WEAK_LVH,
        ),
        SyntheticBuilderConfig(
            name="realistic_stable_conditions",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s: realistic_weak_lvh"
            " with each patient's conditions fixed across their ECGs (a transfer candidate)",
            n_patients=2000,
            realism=REALISTIC_STABLE_CONDITIONS,
        ),
        SyntheticBuilderConfig(
            name="cpu_realistic_stable_conditions",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s:"
            " cpu_realistic_weak_lvh with each patient's conditions fixed across their ECGs (the"
            " default CPU job: it met the transfer calibration's four criteria)",
            n_patients=1500,
            n_samples=1024,
            realism=REALISTIC_STABLE_CONDITIONS,
        ),
        SyntheticBuilderConfig(
            name="realistic_no_families",
            description="2,000 patients x 2-4 ECGs, 4096 samples over 10 s: realistic_weak_lvh"
            " without look-alike families (a transfer candidate)",
            n_patients=2000,
            realism=REALISTIC_NO_FAMILIES,
        ),
        SyntheticBuilderConfig(
            name="cpu_realistic_no_families",
            description="1,500 patients x 2-4 ECGs, 1024 samples over 10 s:"
            " cpu_realistic_weak_lvh without look-alike families (a transfer candidate)",
            n_patients=1500,
            n_samples=1024,
            realism=REALISTIC_NO_FAMILIES,
        ),
        SyntheticBuilderConfig(
            name="tiny",
            description="48 patients x 2-3 ECGs, 256 samples over 10 s (tests)",
            n_patients=48,
            ecgs_per_patient=(2, 3),
            n_samples=256,
        ),
    ]

    def _build_manifest(self, dl_manager) -> pd.DataFrame:
        config = self.builder_config.synthetic_config()
        frames = []
        for start in range(0, config.n_patients, CHUNK_PATIENTS):
            ids = np.arange(start, min(start + CHUNK_PATIENTS, config.n_patients))
            frames.append(synthetic.sample_recordings(config, sample_patient_model(config, ids))[1])
        metadata = pd.concat(frames, ignore_index=True)
        return pd.DataFrame(
            {
                "record_id": metadata["record_id"],
                "patient_id": metadata["patient_id"].astype(str),
                "path": "",
                "age": metadata["age"],
                "sex": metadata["sex"],
                "af": metadata["af"],
                "lvh": metadata["lvh"],
                "bbb": metadata["bbb"],
                "heart_rate": metadata["heart_rate_bpm"],
                "sampling_rate": config.sampling_rate,
            }
        )

    def _iter_outcomes(self, tasks: list[dict[str, Any]]) -> Iterator[ingest.Outcome]:
        config = self.builder_config.synthetic_config()
        patients = list(dict.fromkeys(int(task["patient_id"]) for task in tasks))
        rendered: dict[str, np.ndarray] = {}
        position = 0
        for start in range(0, len(patients), CHUNK_PATIENTS):
            ecgs, metadata = render_patients(
                config, np.asarray(patients[start : start + CHUNK_PATIENTS])
            )
            rendered = dict(zip(metadata["record_id"], ecgs.astype(np.float16), strict=True))
            while position < len(tasks) and tasks[position]["record_id"] in rendered:
                record_id = tasks[position]["record_id"]
                yield ingest.Outcome(record_id, rendered.pop(record_id), config.sampling_rate)
                position += 1
        if position != len(tasks):
            raise RuntimeError(f"rendered {position} of {len(tasks)} synthetic ECGs")
