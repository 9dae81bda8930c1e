"""``prepare_ecg`` on the shipped real records: what the model is fed equals
``wfdb.rdrecord(...).p_signal`` reordered and resampled by an independent reference, the 500 Hz
and 100 Hz copies of one ECG agree, and every kind of bad input is named."""

import dataclasses
import math

import numpy as np
import pytest
import wfdb

from pclr_jax.signals.leads import STANDARD_LEADS
from pclr_jax.signals.preprocess import ECGValidationError, prepare_ecg
from pclr_jax.signals.records import ECGRecord, read_wfdb

PTBXL_100 = "ptbxl/records100/00000/00273_lr"
# The 12 standard leads as each source spells them (hand-written, not via pclr_jax.signals.leads).
SPELLINGS = {
    "ptbxl": ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"],
    "cinc2021": list(STANDARD_LEADS),
    "ptbdb": ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"],
}


def interp_reference(p_signal: np.ndarray, n_samples: int) -> np.ndarray:
    """ml4h's ``process_ecg``: each lead linearly interpolated from linspace(0, 1, samples) onto
    linspace(0, 1, n_samples)."""
    out = np.zeros((n_samples, p_signal.shape[1]))
    for i in range(p_signal.shape[1]):
        out[:, i] = np.interp(
            np.linspace(0, 1, n_samples), np.linspace(0, 1, p_signal.shape[0]), p_signal[:, i]
        )
    return out


def reordered_p_signal(path, source):
    raw = wfdb.rdrecord(str(path))
    return raw.p_signal[:, [raw.sig_name.index(name) for name in SPELLINGS[source]]]


@pytest.mark.parametrize(
    ("record", "source"),
    [
        ("ptbxl/records100/00000/00055_lr", "ptbxl"),
        ("ptbxl/records500/00000/00055_hr", "ptbxl"),
        ("cinc2021/E07500", "cinc2021"),
    ],
)
@pytest.mark.parametrize("n_samples", [4096, 2500])
def test_model_input_equals_rdrecord_interpolated(test_data_dir, record, source, n_samples):
    path = test_data_dir / record
    prepared = prepare_ecg(read_wfdb(path), n_samples=n_samples)
    assert prepared.dtype == np.float32 and prepared.shape == (n_samples, 12)
    reference = interp_reference(reordered_p_signal(path, source), n_samples)
    np.testing.assert_allclose(prepared, reference, rtol=1e-6, atol=1e-6)


def test_ptb_fifteen_leads_drops_frank_and_checks_duration(test_data_dir):
    path = test_data_dir / "ptbdb/patient001/s0010_re"
    record = read_wfdb(path)
    with pytest.raises(ECGValidationError, match="s0010_re: 38.4 s") as info:
        prepare_ecg(record)
    assert info.value.reason == "too_long"
    prepared = prepare_ecg(record, expected_duration_s=None)
    assert prepared.shape == (4096, 12)
    reference = interp_reference(reordered_p_signal(path, "ptbdb"), 4096)
    np.testing.assert_allclose(prepared, reference, rtol=1e-6, atol=1e-6)
    # The same record with its columns shuffled (Frank leads in between) gives the same input.
    order = np.random.default_rng(0).permutation(15)
    shuffled = dataclasses.replace(
        record,
        signal=record.signal[:, order],
        lead_names=tuple(record.lead_names[i] for i in order),
    )
    np.testing.assert_array_equal(prepare_ecg(shuffled, expected_duration_s=None), prepared)


def test_single_lead_models(test_data_dir):
    path = test_data_dir / PTBXL_100
    signal = wfdb.rdrecord(str(path)).p_signal
    lead_i = prepare_ecg(read_wfdb(path), 4096, leads=("I",))
    lead_ii = prepare_ecg(read_wfdb(path), 2500, leads=("II",))
    np.testing.assert_allclose(lead_i, interp_reference(signal[:, :1], 4096), atol=1e-6)
    np.testing.assert_allclose(lead_ii, interp_reference(signal[:, 1:2], 2500), atol=1e-6)


def median_lead_correlation(a, b):
    return float(np.median([np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(a.shape[1])]))


@pytest.mark.parametrize("ecg", ["00055", "00056", "00273", "00298"])
def test_500_and_100_hz_copies_of_one_ecg_agree(test_data_dir, ecg):
    # PTB-XL ships every ECG with ecg_id <= 500 at both rates: resampled to 4096 samples, the two
    # copies must be the same signal up to the 100 Hz copy's lost high frequencies.
    high, low = (read_wfdb(test_data_dir / f"ptbxl/{d}/00000/{ecg}_{s}")
                 for d, s in (("records500", "hr"), ("records100", "lr")))  # fmt: skip
    ml4h = [prepare_ecg(r, 4096, resample="ml4h") for r in (high, low)]
    antialias = [prepare_ecg(r, 4096, resample="antialias") for r in (high, low)]
    first, last = slice(0, 820), slice(4096 - 820, 4096)  # first and last 2 s
    # The anti-aliased mode keeps true time (sample k at k * 10 s / 4096): the copies agree
    # everywhere, in shape and in amplitude.
    assert median_lead_correlation(*antialias) > 0.96
    assert median_lead_correlation(antialias[0][last], antialias[1][last]) > 0.9
    assert np.median(np.abs(antialias[0] - antialias[1])) < 0.03 * np.ptp(antialias[0], 0).mean()
    # ml4h maps first and last samples onto each other, i.e. 9.998 s (500 Hz) and 9.99 s (100 Hz)
    # onto the same 4096 points: the copies agree at the start and drift apart by up to 8 ms
    # (3 output samples) at the end, as the released model's preprocessing does.
    assert median_lead_correlation(ml4h[0][first], ml4h[1][first]) > 0.97
    assert median_lead_correlation(*ml4h) > 0.93
    drift_last = median_lead_correlation(ml4h[0][last], ml4h[1][last])
    assert drift_last < median_lead_correlation(antialias[0][last], antialias[1][last])


def test_antialias_keeps_low_frequencies_and_removes_aliases():
    fs, seconds, n_samples = 1000.0, 10.0, 256  # 25.6 Hz after resampling: Nyquist 12.8 Hz
    t = np.arange(int(fs * seconds)) / fs
    slow = np.sin(2 * math.pi * 1.0 * t)
    fast = 0.5 * np.sin(2 * math.pi * 40.0 * t)  # aliases to 40 - 25.6 = 14.4 -> 11.2 Hz
    record = ECGRecord("tones", np.stack([slow + fast] * 12, 1), STANDARD_LEADS, fs)
    out = prepare_ecg(record, n_samples, resample="antialias")[:, 0]
    # resample_poly's grid: output k at input time k * samples / n_samples.
    t_out = np.arange(n_samples) * (seconds / n_samples)
    inner = slice(20, -20)  # away from the edges
    np.testing.assert_allclose(out[inner], np.sin(2 * math.pi * t_out)[inner], atol=0.02)
    aliased = prepare_ecg(record, n_samples, resample="ml4h")[:, 0]
    t_ml4h = np.linspace(0, t[-1], n_samples)
    assert np.abs(aliased - np.sin(2 * math.pi * t_ml4h))[inner].max() > 0.3


@pytest.fixture
def record(test_data_dir):
    return read_wfdb(test_data_dir / PTBXL_100)


def with_signal(record, signal, **changes):
    return dataclasses.replace(record, signal=signal, **changes)


def test_units_are_converted(record):
    reference = prepare_ecg(record)
    in_uv = with_signal(record, record.signal * 1000.0, units="uV")
    np.testing.assert_allclose(prepare_ecg(in_uv), reference, rtol=1e-6, atol=1e-6)
    in_v = with_signal(record, record.signal / 1000.0, units="V")
    np.testing.assert_allclose(prepare_ecg(in_v), reference, rtol=1e-6, atol=1e-6)
    no_unit = with_signal(record, record.signal, units="")
    np.testing.assert_array_equal(prepare_ecg(no_unit), reference)


def expect_error(record, reason, lead=None, **kwargs):
    with pytest.raises(ECGValidationError) as info:
        prepare_ecg(record, **kwargs)
    error = info.value
    assert (error.reason, error.lead, error.record_id) == (reason, lead, record.record_id)
    assert "00273_lr" in str(error)
    if lead is not None:
        assert lead in str(error)
    return error


def test_bad_inputs_name_record_and_lead(record):
    signal = record.signal.copy()
    signal[100:110, 8] = np.nan  # V3
    expect_error(with_signal(record, signal), "non_finite", "V3")
    signal = record.signal.copy()
    signal[5, 4] = np.inf  # AVL in the file, aVL in the error
    expect_error(with_signal(record, signal), "non_finite", "aVL")
    signal = record.signal.copy()
    signal[:, 4] = 0.2
    expect_error(with_signal(record, signal), "flat_lead", "aVL")
    expect_error(with_signal(record, record.signal * 1000.0), "units")
    expect_error(with_signal(record, record.signal, units="mmHg"), "units")
    expect_error(
        with_signal(record, record.signal[:, :11], lead_names=record.lead_names[:11]),
        "missing_lead",
        "V6",
    )
    expect_error(with_signal(record, record.signal[:700]), "too_short")  # 7 s, 10 expected
    expect_error(with_signal(record, record.signal[:10]), "too_short", expected_duration_s=None)
    expect_error(with_signal(record, record.signal[:, :11]), "bad_shape")
    expect_error(with_signal(record, record.signal, sampling_rate=0.0), "bad_sampling_rate")
    # A 10.3 s record passes the default 0.5 s tolerance; a 7 s one passes when disabled.
    assert prepare_ecg(with_signal(record, record.signal, sampling_rate=97.0)).shape == (4096, 12)
    short = with_signal(record, record.signal[:700])
    assert prepare_ecg(short, expected_duration_s=None).shape == (4096, 12)
    with pytest.raises(ValueError, match="resample"):
        prepare_ecg(record, resample="cubic")
