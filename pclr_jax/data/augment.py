"""ECG augmentations: pure NumPy functions ``(ecg, rng, ...) -> ecg`` and a configurable chain.

An ECG is ``(samples, leads)`` in mV; every function returns a new float32 array of the same
shape and leaves its input untouched. All are off by default (PCLR trains on raw ECG pairs); the
ml4h PCLR code offered time warp, per-lead crop and noise, the first three below:

* ``time_warp``: smooth monotone re-timing. Output sample ``t`` (time as a fraction of the record)
  reads the input at ``t + d(t)`` by linear interpolation, with
  ``d(t) = max_shift * (u1 sin(pi t) + u2 sin(2 pi t)) / 2`` and ``u1, u2 ~ U(-1, 1)``: the ends
  stay put, ``|d| <= max_shift``, and ``max_shift < 0.2`` keeps the map strictly increasing
  (ml4h: one sinusoidal bulge of at most 2 % of the record).
* ``random_crop``: per lead, keep one random window of at least ``min_keep`` of the record in place
  and zero the rest (crop + zero-pad; nothing is shifted or resized). ml4h instead blanked one
  random segment of up to a third of each lead with a random constant.
* ``gaussian_noise``: add white Gaussian noise of ``std_mv`` mV. ml4h scaled its noise by each
  lead's mean; an absolute level in mV does not depend on baseline offsets.
* ``drop_leads``: zero each lead with probability ``rate`` (never all of them).
* ``amplitude_scale``: multiply the whole ECG by one factor, log-uniform in
  ``[1 / max_factor, max_factor]`` (one factor for all leads keeps Einthoven's law).

:func:`augment` applies them in the order time_warp, amplitude_scale, gaussian_noise,
random_crop, drop_leads (zeroing last, so cropped and dropped samples are exactly 0 mV, as a
missing lead would be), each with its own probability.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

MAX_TIME_WARP_SHIFT = 0.2


def time_warp(ecg: np.ndarray, rng: np.random.Generator, max_shift: float = 0.02) -> np.ndarray:
    """Smoothly re-times ``ecg`` ``(samples, leads)``; ``max_shift`` is a fraction of its length."""
    samples = ecg.shape[0]
    t = np.linspace(0.0, 1.0, samples)
    u1, u2 = rng.uniform(-1.0, 1.0, size=2)
    shift = 0.5 * max_shift * (u1 * np.sin(np.pi * t) + u2 * np.sin(2 * np.pi * t))
    source = np.clip((t + shift) * (samples - 1), 0.0, samples - 1)
    return resample_at(ecg, source)


def resample_at(ecg: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of every lead of ``ecg`` at fractional sample ``positions``."""
    left = np.minimum(positions.astype(np.int64), ecg.shape[0] - 2)
    weight = (positions - left).astype(np.float32)[:, None]
    signal = ecg.astype(np.float32, copy=False)
    return signal[left] * (1.0 - weight) + signal[left + 1] * weight


def random_crop(ecg: np.ndarray, rng: np.random.Generator, min_keep: float = 2 / 3) -> np.ndarray:
    """Per lead, keeps a random window of at least ``min_keep`` of the record; zeros the rest."""
    samples, leads = ecg.shape
    shortest = max(1, math.ceil(min_keep * samples))
    length = rng.integers(shortest, samples + 1, size=leads)
    start = (rng.random(leads) * (samples - length + 1)).astype(np.int64)
    out = ecg.astype(np.float32)
    for lead in range(leads):
        out[: start[lead], lead] = 0.0
        out[start[lead] + length[lead] :, lead] = 0.0
    return out


def drop_leads(ecg: np.ndarray, rng: np.random.Generator, rate: float = 0.25) -> np.ndarray:
    """Zeros each lead with probability ``rate``; if all would go, one random lead stays."""
    leads = ecg.shape[1]
    dropped = rng.random(leads) < rate
    if dropped.all():
        dropped[rng.integers(leads)] = False
    out = ecg.astype(np.float32)
    out[:, dropped] = 0.0
    return out


def gaussian_noise(ecg: np.ndarray, rng: np.random.Generator, std_mv: float = 0.05) -> np.ndarray:
    """Adds white Gaussian noise with standard deviation ``std_mv`` mV."""
    noise = rng.standard_normal(ecg.shape, dtype=np.float32)
    return ecg.astype(np.float32) + np.float32(std_mv) * noise


def amplitude_scale(
    ecg: np.ndarray, rng: np.random.Generator, max_factor: float = 1.25
) -> np.ndarray:
    """Multiplies ``ecg`` by one factor, log-uniform in ``[1 / max_factor, max_factor]``."""
    factor = math.exp(rng.uniform(-math.log(max_factor), math.log(max_factor)))
    return ecg.astype(np.float32) * np.float32(factor)


@dataclasses.dataclass(frozen=True)
class TimeWarp:
    probability: float = 0.0
    max_shift: float = 0.02  # fraction of the record

    def check(self) -> None:
        if not 0.0 <= self.max_shift < MAX_TIME_WARP_SHIFT:
            raise ValueError(
                f"time_warp.max_shift={self.max_shift} must be in [0, {MAX_TIME_WARP_SHIFT}) "
                "for a monotone warp"
            )


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    probability: float = 0.0
    min_keep: float = 2 / 3  # shortest kept window, fraction of the record

    def check(self) -> None:
        if not 0.0 < self.min_keep <= 1.0:
            raise ValueError(f"random_crop.min_keep={self.min_keep} must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class DropLeads:
    probability: float = 0.0
    rate: float = 0.25  # chance that each lead is zeroed

    def check(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"drop_leads.rate={self.rate} must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    probability: float = 0.0
    std_mv: float = 0.05

    def check(self) -> None:
        if self.std_mv < 0:
            raise ValueError(f"gaussian_noise.std_mv={self.std_mv} must be non-negative")


@dataclasses.dataclass(frozen=True)
class AmplitudeScale:
    probability: float = 0.0
    max_factor: float = 1.25

    def check(self) -> None:
        if self.max_factor < 1.0:
            raise ValueError(f"amplitude_scale.max_factor={self.max_factor} must be >= 1")


# Name -> (settings class, function, the settings field passed to the function), in chain order.
_CHAIN: dict[str, tuple[type, Callable[..., np.ndarray], str]] = {
    "time_warp": (TimeWarp, time_warp, "max_shift"),
    "amplitude_scale": (AmplitudeScale, amplitude_scale, "max_factor"),
    "gaussian_noise": (GaussianNoise, gaussian_noise, "std_mv"),
    "random_crop": (RandomCrop, random_crop, "min_keep"),
    "drop_leads": (DropLeads, drop_leads, "rate"),
}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Each augmentation's probability and strength; all probabilities 0 (off) by default."""

    time_warp: TimeWarp = TimeWarp()
    amplitude_scale: AmplitudeScale = AmplitudeScale()
    gaussian_noise: GaussianNoise = GaussianNoise()
    random_crop: RandomCrop = RandomCrop()
    drop_leads: DropLeads = DropLeads()

    def __post_init__(self):
        for name in _CHAIN:
            settings = getattr(self, name)
            if not 0.0 <= settings.probability <= 1.0:
                raise ValueError(f"{name}.probability={settings.probability} must be in [0, 1]")
            settings.check()

    @classmethod
    def from_dict(cls, config: Mapping[str, Mapping[str, Any]] | None) -> AugmentConfig:
        """From ``{'time_warp': {'probability': 0.5, 'max_shift': 0.03}, ...}`` (missing: off)."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(_CHAIN))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; known: {sorted(_CHAIN)}")
        return cls(**{name: _CHAIN[name][0](**dict(value)) for name, value in config.items()})

    def to_dict(self) -> dict[str, dict[str, float]]:
        return dataclasses.asdict(self)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the augmentations with a non-zero probability, in chain order."""
        return tuple(name for name in _CHAIN if getattr(self, name).probability > 0)


def augment(
    ecg: np.ndarray, rng: np.random.Generator, config: AugmentConfig, force: bool = False
) -> np.ndarray:
    """Applies each enabled augmentation with its probability; float32 ``(samples, leads)`` mV.

    When nothing fires the input itself is returned (cast to float32 if it was not).

    With ``force=True`` (a single-ECG patient's second view), when none fires by chance one
    enabled augmentation, chosen uniformly, is applied, so the view never equals its source.
    """
    enabled = config.enabled
    if force and not enabled:
        raise ValueError("force=True needs at least one augmentation with probability > 0")
    fires = rng.random(len(enabled)) < [getattr(config, name).probability for name in enabled]
    if force and not fires.any():
        fires[rng.integers(len(enabled))] = True
    out = ecg
    for name, fire in zip(enabled, fires, strict=True):
        if fire:
            _, function, field = _CHAIN[name]
            out = function(out, rng, getattr(getattr(config, name), field))
    return np.asarray(out, dtype=np.float32)
