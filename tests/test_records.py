"""Readers on the shipped real records (values against raw-format decoding and wfdb) and on
corrupted copies, ``.npy`` and HDF5 layouts, and folder expansion."""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from pclr_jax.signals.leads import STANDARD_LEADS
from pclr_jax.signals.records import (
    ArrayOptions,
    ECGRecord,
    ECGValidationError,
    count_records,
    input_files,
    iter_records,
    millivolts_per_unit,
    read_hdf5,
    read_input_file,
    read_npy,
    read_wfdb,
)

PTBXL_100 = "ptbxl/records100/00000/00055_lr"


def copy_record(test_data_dir, record, target_dir):
    """Copies the files of one WFDB record to ``target_dir``; returns the new record path."""
    for source in test_data_dir.glob(record + ".*"):
        shutil.copy(source, target_dir / source.name)
    return target_dir / record.rsplit("/", 1)[-1]


def test_ptbxl_values_equal_the_raw_int16_data(test_data_dir):
    # README facts: format 16 interleaved int16, gain 1000/mV, baseline 0.
    path = test_data_dir / PTBXL_100
    raw = np.fromfile(str(path) + ".dat", "<i2").reshape(-1, 12) / 1000.0
    for form in (str(path), str(path) + ".hea"):
        record = read_wfdb(form)
        assert record.record_id == str(path)
        assert record.signal.shape == (1000, 12) and record.sampling_rate == 100.0
        assert record.units == "mV"
        assert record.lead_names == ("I", "II", "III", "AVR", "AVL", "AVF", *STANDARD_LEADS[6:])
        np.testing.assert_allclose(record.signal, raw, atol=1e-12)


def test_cinc_mat_values_equal_loadmat(test_data_dir):
    record = read_wfdb(test_data_dir / "cinc2021/E07501.hea")
    val = scipy.io.loadmat(str(test_data_dir / "cinc2021/E07501.mat"))["val"]
    assert record.sampling_rate == 500.0 and record.lead_names == STANDARD_LEADS
    np.testing.assert_allclose(record.signal, val.T / 1000.0, atol=1e-12)


def test_ptb_fifteen_leads_at_1000_hz(test_data_dir):
    path = test_data_dir / "ptbdb/patient001/s0010_re"
    record = read_wfdb(path)
    assert record.signal.shape == (38400, 15) and record.sampling_rate == 1000.0
    assert record.lead_names[12:] == ("vx", "vy", "vz")
    standard = np.fromfile(str(path) + ".dat", "<i2").reshape(-1, 12) / 2000.0
    frank = np.fromfile(str(path) + ".xyz", "<i2").reshape(-1, 3) / 2000.0
    np.testing.assert_allclose(record.signal, np.hstack([standard, frank]), atol=1e-12)


def test_broken_wfdb_files_name_the_record(test_data_dir, tmp_path):
    truncated = copy_record(test_data_dir, PTBXL_100, tmp_path)
    data = truncated.with_suffix(".dat").read_bytes()
    truncated.with_suffix(".dat").write_bytes(data[: len(data) // 3])
    with pytest.raises(ECGValidationError, match="00055_lr") as info:
        read_wfdb(truncated)
    assert info.value.reason == "corrupt_file" and info.value.record_id == str(truncated)

    (tmp_path / "nodata").mkdir()
    no_data = copy_record(test_data_dir, "cinc2021/E07500", tmp_path / "nodata")
    no_data.with_suffix(".mat").unlink()
    with pytest.raises(ECGValidationError, match="E07500") as info:
        read_wfdb(no_data)
    assert info.value.reason == "missing_file"

    garbage = tmp_path / "garbage"
    garbage.with_suffix(".hea").write_text("this is not a header\n")
    with pytest.raises(ECGValidationError, match="garbage") as info:
        read_wfdb(garbage)
    assert info.value.reason == "corrupt_file"

    with pytest.raises(ECGValidationError) as info:
        read_wfdb(tmp_path / "absent")
    assert info.value.reason == "missing_file"


def test_channels_in_different_units_are_converted_to_mv(test_data_dir, tmp_path):
    signal = wfdb.rdrecord(str(test_data_dir / PTBXL_100)).p_signal
    scaled = signal.copy()
    scaled[:, 1] *= 1000.0  # lead II written in uV
    wfdb.wrsamp(
        "mixed",
        fs=100,
        units=["mV", "uV", *["mV"] * 10],
        sig_name=list(STANDARD_LEADS),
        p_signal=scaled,
        fmt=["32"] * 12,
        adc_gain=[1000.0, 1.0, *[1000.0] * 10],
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    record = read_wfdb(tmp_path / "mixed")
    assert record.units == "mV"
    np.testing.assert_allclose(record.signal, signal, atol=1e-9)


def test_unit_scales():
    assert millivolts_per_unit("mV") == millivolts_per_unit("") == millivolts_per_unit(None) == 1
    assert millivolts_per_unit("uV") == millivolts_per_unit("µV") == 1e-3
    assert millivolts_per_unit("microvolts") == 1e-3
    assert millivolts_per_unit("V") == 1e3
    with pytest.raises(KeyError):
        millivolts_per_unit("mmHg")


def test_npy_arrays(tmp_path):
    rng = np.random.default_rng(0)
    ecgs = rng.normal(size=(3, 5000, 12)).astype(np.float32)
    np.save(tmp_path / "batch.npy", ecgs)
    records = list(read_npy(tmp_path / "batch.npy"))
    assert [r.record_id for r in records] == ["batch:0", "batch:1", "batch:2"]
    assert all(r.sampling_rate == 500.0 and r.lead_names == STANDARD_LEADS for r in records)
    np.testing.assert_array_equal(records[2].signal, ecgs[2])
    rate = list(read_npy(tmp_path / "batch.npy", ArrayOptions(sampling_rate=250.0)))
    assert rate[0].sampling_rate == 250.0

    # One ECG (samples, leads) is one record; a wrong lead count is named.
    np.save(tmp_path / "one.npy", ecgs[0])
    assert len(list(read_npy(tmp_path / "one.npy"))) == 1
    np.save(tmp_path / "eight.npy", ecgs[:, :, :8])
    with pytest.raises(ECGValidationError, match="eight:0") as info:
        next(read_npy(tmp_path / "eight.npy"))
    assert info.value.reason == "bad_shape"

    data = (tmp_path / "batch.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ECGValidationError, match="cut.npy") as info:
        next(read_npy(tmp_path / "cut.npy"))
    assert info.value.reason == "corrupt_file"


def test_hdf5_array_and_ml4h_layouts(tmp_path):
    rng = np.random.default_rng(1)
    tracings = np.zeros((3, 4096, 12), np.float32)
    tracings[:, 48:4048] = rng.normal(size=(3, 4000, 12))
    with h5py.File(tmp_path / "code15.hdf5", "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.array([11, 12, 13])
    options = ArrayOptions(sampling_rate=400.0, trim_zero_padding=True)
    records = list(read_hdf5(tmp_path / "code15.hdf5", options=options))
    assert [r.record_id for r in records] == ["11", "12", "13"]
    np.testing.assert_array_equal(records[1].signal, tracings[1, 48:4048])
    assert records[0].sampling_rate == 400.0

    with h5py.File(tmp_path / "ml4h.h5", "w") as f:
        f["tensors/sample_a"] = tracings[0]
        f["tensors/sample_b"] = tracings[1]
    records = list(read_hdf5(tmp_path / "ml4h.h5"))
    assert [r.record_id for r in records] == ["sample_a", "sample_b"]
    np.testing.assert_array_equal(records[1].signal, tracings[1])
    assert records[0].sampling_rate == pytest.approx(409.6)

    data = (tmp_path / "code15.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[:1000])
    with pytest.raises(ECGValidationError, match="cut.hdf5") as info:
        next(read_hdf5(tmp_path / "cut.hdf5"))
    assert info.value.reason == "corrupt_file"


def test_iter_records_expands_folders_and_yields_failures(test_data_dir, tmp_path):
    meta = pd.read_csv(test_data_dir / "records.csv")
    items = list(iter_records(test_data_dir))
    assert all(isinstance(item, ECGRecord) for item in items)
    ids = {item.record_id for item in items}
    assert ids == set(meta["record"])  # paths relative to the folder given, without extension

    folder = tmp_path / "mixed"
    folder.mkdir()
    bad = copy_record(test_data_dir, PTBXL_100, folder)
    bad.with_suffix(".dat").write_bytes(b"\x00" * 10)
    copy_record(test_data_dir, "cinc2021/E07502", folder)
    np.save(folder / "arrays.npy", np.ones((2, 1000, 12), np.float32))
    (folder / "notes.txt").write_text("ignored")
    items = list(iter_records([folder, tmp_path / "absent.hea"]))
    kinds = [
        (type(i).__name__, getattr(i, "reason", None), i.record_id.rsplit("/", 1)[-1])
        for i in items
    ]
    assert kinds == [
        ("ECGValidationError", "corrupt_file", "00055_lr"),
        ("ECGRecord", None, "E07502"),
        ("ECGRecord", None, "arrays:0"),
        ("ECGRecord", None, "arrays:1"),
        ("ECGValidationError", "missing_file", "absent.hea"),
    ]


def test_files_are_counted_and_read_by_rows_with_their_relative_ids(test_data_dir, tmp_path):
    folder = tmp_path / "cohort"
    (folder / "sub").mkdir(parents=True)
    copy_record(test_data_dir, PTBXL_100, folder)
    ecgs = np.random.default_rng(2).normal(size=(5, 1000, 12)).astype(np.float32)
    np.save(folder / "sub" / "five.npy", ecgs)
    with h5py.File(folder / "sub" / "exams.h5", "w") as f:
        f["tracings"] = ecgs[:3]
        f["exam_id"] = np.array([7, 8, 9])
    (folder / "sub" / "corrupt.h5").write_bytes(b"\x89HDF not really")
    np.save(folder / "sub" / "one_d.npy", np.zeros(1000, np.float32))
    np.save(folder / "sub" / "empty.npy", np.zeros((0, 1000, 12), np.float32))
    files = {f.sample_id: f for f in input_files([folder])}
    counts = {sample_id: count_records(f) for sample_id, f in files.items()}
    assert counts == {
        "00055_lr": (1, False),
        "sub/corrupt": (1, False),
        "sub/empty": (0, True),
        "sub/exams": (3, True),
        "sub/five": (5, True),
        "sub/one_d": (1, False),
    }
    # Rows 1..3 of an array file, and a row range past the end stops at the end.
    rows = list(read_input_file(files["sub/five"], rows=range(1, 4)))
    assert [r.record_id for r in rows] == ["sub/five:1", "sub/five:2", "sub/five:3"]
    np.testing.assert_array_equal(rows[2].signal, ecgs[3])
    assert [r.record_id for r in read_input_file(files["sub/exams"], rows=range(2, 9))] == ["9"]
    # A file that cannot be read as a whole is one failure named by its relative id (not its
    # absolute path), or one per row when read by rows (it became unreadable after counting).
    for sample_id, reason in (("sub/corrupt", "corrupt_file"), ("sub/one_d", "bad_shape")):
        (error,) = read_input_file(files[sample_id])
        assert (error.record_id, error.reason) == (sample_id, reason)
        assert error.source == files[sample_id].path
    by_rows = list(read_input_file(files["sub/corrupt"], rows=range(0, 2)))
    assert [e.record_id for e in by_rows] == ["sub/corrupt:0", "sub/corrupt:1"]
    assert list(read_input_file(files["sub/empty"])) == []
