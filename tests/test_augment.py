"""ECG augmentations: shape, statistics and determinism of each, and the probability chain."""

import math

import numpy as np
import pytest

from pclr_jax.data import augment as aug

SAMPLES, LEADS = 2048, 12


@pytest.fixture
def ecg() -> np.ndarray:
    """A (samples, leads) float16 mV signal without zeros: sines of different rates plus 1 mV."""
    t = np.linspace(0, 10, SAMPLES)[:, None]
    return (1.0 + 0.5 * np.sin(2 * np.pi * (1 + np.arange(LEADS)) * t / 7)).astype(np.float16)


def rng(seed=0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_default_config_is_off_and_identity(ecg):
    config = aug.AugmentConfig()
    assert config.enabled == ()
    out = aug.augment(ecg, rng(), config)
    assert out.dtype == np.float32 and out.shape == ecg.shape
    np.testing.assert_array_equal(out, ecg.astype(np.float32))


def test_zero_probability_is_identity_even_with_strong_settings(ecg):
    config = aug.AugmentConfig.from_dict(
        {
            "time_warp": {"probability": 0.0, "max_shift": 0.1},
            "gaussian_noise": {"probability": 0.0, "std_mv": 5.0},
            "drop_leads": {"probability": 0.0, "rate": 1.0},
        }
    )
    np.testing.assert_array_equal(aug.augment(ecg, rng(), config), ecg.astype(np.float32))


@pytest.mark.parametrize(
    "function",
    [aug.time_warp, aug.random_crop, aug.drop_leads, aug.gaussian_noise, aug.amplitude_scale],
)
def test_each_function_is_deterministic_for_its_rng_and_keeps_input(function, ecg):
    before = ecg.copy()
    first = function(ecg, rng(3))
    np.testing.assert_array_equal(first, function(ecg, rng(3)))
    assert not np.array_equal(first, function(ecg, rng(4)))
    assert first.shape == ecg.shape and first.dtype == np.float32
    np.testing.assert_array_equal(ecg, before)


def test_gaussian_noise_has_the_configured_std_in_mv(ecg):
    out = aug.gaussian_noise(ecg, rng(), std_mv=0.1)
    noise = out - ecg.astype(np.float32)
    assert noise.std() == pytest.approx(0.1, rel=0.02)  # 24,576 samples: 0.5 % standard error
    assert abs(noise.mean()) < 0.003


def test_drop_leads_zeros_whole_leads_and_keeps_the_others(ecg):
    dropped_fraction = []
    for seed in range(200):
        out = aug.drop_leads(ecg, rng(seed), rate=0.25)
        dropped = np.all(out == 0, axis=0)
        np.testing.assert_array_equal(out[:, ~dropped], ecg[:, ~dropped].astype(np.float32))
        dropped_fraction.append(dropped.mean())
    # 2,400 lead draws at p = 0.25: standard error 0.009.
    assert np.mean(dropped_fraction) == pytest.approx(0.25, abs=0.03)


def test_drop_leads_never_drops_every_lead(ecg):
    for seed in range(20):
        out = aug.drop_leads(ecg, rng(seed), rate=1.0)
        kept = np.flatnonzero(np.any(out != 0, axis=0))
        assert len(kept) == 1
        np.testing.assert_array_equal(out[:, kept], ecg[:, kept].astype(np.float32))


def test_time_warp_is_a_monotone_resampling_with_fixed_ends():
    ramp = np.repeat(np.arange(SAMPLES, dtype=np.float32)[:, None], LEADS, axis=1)
    max_shift = 0.05
    for seed in range(20):
        positions = aug.time_warp(ramp, rng(seed), max_shift)
        # A ramp maps to the read positions: identical on all leads, increasing, ends fixed.
        np.testing.assert_allclose(positions, positions[:, :1].repeat(LEADS, axis=1))
        assert np.all(np.diff(positions[:, 0]) > 0)
        assert positions[0, 0] == pytest.approx(0, abs=1e-3)
        assert positions[-1, 0] == pytest.approx(SAMPLES - 1, abs=1e-2)
        assert np.max(np.abs(positions[:, 0] - ramp[:, 0])) <= max_shift * (SAMPLES - 1) + 1e-3


def test_time_warp_equals_numpy_interp_at_its_positions(ecg):
    ramp = np.repeat(np.arange(SAMPLES, dtype=np.float64)[:, None], LEADS, axis=1)
    positions = aug.time_warp(ramp, rng(7), 0.05)[:, 0].astype(np.float64)
    warped = aug.time_warp(ecg, rng(7), 0.05)
    for lead in range(LEADS):
        reference = np.interp(positions, np.arange(SAMPLES), ecg[:, lead].astype(np.float64))
        np.testing.assert_allclose(warped[:, lead], reference, atol=2e-3)


def test_time_warp_leaves_a_constant_signal_constant():
    constant = np.full((SAMPLES, LEADS), 0.7, np.float32)
    np.testing.assert_allclose(aug.time_warp(constant, rng(), 0.1), constant, rtol=1e-6)


def test_random_crop_keeps_one_window_per_lead_in_place(ecg):
    min_keep = 0.6
    starts = set()
    for seed in range(20):
        out = aug.random_crop(ecg, rng(seed), min_keep)
        for lead in range(LEADS):
            kept = np.flatnonzero(out[:, lead] != 0)
            assert len(kept) >= math.ceil(min_keep * SAMPLES)
            assert kept[-1] - kept[0] + 1 == len(kept)  # one contiguous window
            np.testing.assert_array_equal(out[kept, lead], ecg[kept, lead].astype(np.float32))
            starts.add(int(kept[0]))
    assert len(starts) > 50  # windows differ across leads and draws


def test_amplitude_scale_multiplies_everything_by_one_bounded_factor(ecg):
    generator = rng()
    log_factors = []
    for _ in range(2000):
        out = aug.amplitude_scale(ecg[:64], generator, max_factor=1.5)
        ratio = out / ecg[:64].astype(np.float32)
        np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-6)
        assert 1 / 1.5 - 1e-6 <= ratio[0, 0] <= 1.5 + 1e-6
        log_factors.append(math.log(ratio[0, 0]))
    # log-uniform on [-log 1.5, log 1.5]: mean 0 (standard error 0.005), std log(1.5) / sqrt(3).
    assert np.mean(log_factors) == pytest.approx(0, abs=0.02)
    assert np.std(log_factors) == pytest.approx(math.log(1.5) / math.sqrt(3), rel=0.05)


def test_each_augmentation_fires_with_its_own_probability(ecg):
    config = aug.AugmentConfig.from_dict(
        {"amplitude_scale": {"probability": 0.3}, "drop_leads": {"probability": 0.8, "rate": 0.5}}
    )
    scaled = dropped = 0
    for seed in range(400):
        out = aug.augment(ecg, rng(seed), config)
        dropped += bool(np.any(np.all(out == 0, axis=0)))
        live = out[:, np.any(out != 0, axis=0)]
        scaled += not np.allclose(live / ecg[:, np.any(out != 0, axis=0)], 1.0)
    # Binomial(400, p): standard error <= 0.025; a drop at rate 0.5 hits no lead 1/4096 times.
    assert scaled / 400 == pytest.approx(0.3, abs=0.08)
    assert dropped / 400 == pytest.approx(0.8, abs=0.08)


def test_zeroing_comes_last_so_dropped_leads_stay_zero_under_noise(ecg):
    config = aug.AugmentConfig.from_dict(
        {"gaussian_noise": {"probability": 1.0}, "drop_leads": {"probability": 1.0, "rate": 0.5}}
    )
    out = aug.augment(ecg, rng(1), config)
    dropped = np.all(out == 0, axis=0)
    assert 0 < dropped.sum() < LEADS


def test_force_applies_an_augmentation_when_none_fires(ecg):
    config = aug.AugmentConfig.from_dict({"gaussian_noise": {"probability": 1e-9}})
    for seed in range(10):
        assert not np.array_equal(aug.augment(ecg, rng(seed), config, force=True), ecg)
    with pytest.raises(ValueError, match="at least one augmentation"):
        aug.augment(ecg, rng(), aug.AugmentConfig(), force=True)


def test_config_round_trips_and_rejects_bad_settings():
    config = aug.AugmentConfig.from_dict({"time_warp": {"probability": 0.5, "max_shift": 0.03}})
    assert config.enabled == ("time_warp",)
    assert aug.AugmentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown augmentations"):
        aug.AugmentConfig.from_dict({"mixup": {"probability": 1.0}})
    with pytest.raises(ValueError, match="monotone"):
        aug.AugmentConfig.from_dict({"time_warp": {"probability": 1.0, "max_shift": 0.3}})
    with pytest.raises(ValueError, match="probability"):
        aug.AugmentConfig.from_dict({"gaussian_noise": {"probability": 1.5}})
