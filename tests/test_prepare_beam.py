"""``pclr prepare`` on Apache Beam (DirectRunner) writes the same data set as the process pool:
examples bit for bit, splits, index rows, quarantine and duplicate lists, counts; on the synthetic
tiny config, ``tests/data`` (with a truncated record that fails in a worker) and real ECGs of
``shared/data/real_ecg_dev``. Skipped where ``apache-beam`` is not installed."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("apache_beam")

from pclr_jax.cli import main as cli_main  # noqa: E402
from pclr_jax.data.builders.beam_prepare import patient_chunks  # noqa: E402
from pclr_jax.data.prepared import load_prepared, prepared_directory  # noqa: E402

TESTS_DATA = pathlib.Path(__file__).resolve().parent / "data"
REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ecg_dev"
TRUNCATED = "ptbxl/records100/00000/00730_lr"  # in tests/data, patient ptbxl_565


def prepare_both(name: str, data_dir: pathlib.Path, manual_dir=None, config="tiny") -> dict:
    """The data set prepared twice with ``pclr prepare``: process pool (1 worker) and Beam."""
    directories = {}
    for path, extra in (("pool", ["--workers", "1"]), ("beam", ["--beam-runner", "DirectRunner"])):
        argv = ["prepare", name, "--data-dir", str(data_dir / path), "--config", config, *extra]
        if manual_dir is not None:
            argv += ["--manual-dir", str(manual_dir)]
        assert cli_main(argv) == 0
        directories[path] = prepared_directory(name, data_dir / path, config)
    return directories


def assert_same_data_set(name: str, data_dir: pathlib.Path, directories: dict) -> None:
    pool, beam = directories["pool"], directories["beam"]
    for side_file in ("quarantine.csv", "duplicates.csv"):
        assert (pool / side_file).read_text() == (beam / side_file).read_text(), side_file
    pool_report = json.loads((pool / "prepare_report.json").read_text())
    assert pool_report == json.loads((beam / "prepare_report.json").read_text())
    for split in pool_report["written"]:
        a = load_prepared(name, split, data_dir / "pool", config="tiny")
        b = load_prepared(name, split, data_dir / "beam", config="tiny")
        pd.testing.assert_frame_equal(a.index, b.index)
        assert len(a.source) == len(b.source) == pool_report["written"][split]
        for i in range(len(a.source)):
            x, y = a.source[i], b.source[i]
            assert x.keys() == y.keys()
            for key in x:
                assert np.asarray(x[key]).dtype == np.asarray(y[key]).dtype, key
                assert np.asarray(x[key]).tobytes() == np.asarray(y[key]).tobytes(), key


def test_patient_chunks_cut_between_patients():
    tasks = [{"patient_id": p} for p in "aaabbbbbcd"]
    chunks = patient_chunks(tasks, records=4)
    assert [(first, "".join(t["patient_id"] for t in part)) for first, part in chunks] == [
        (0, "aaabbbbb"),
        (8, "cd"),
    ]


def test_synthetic_tiny_is_the_same_on_beam(tmp_path):
    directories = prepare_both("pclr_synthetic", tmp_path)
    assert_same_data_set("pclr_synthetic", tmp_path, directories)


def test_folder_on_beam_quarantines_a_failing_record_and_loses_nothing(tmp_path, capsys):
    """tests/data without ``ecg_group``: a truncated record fails in a Beam worker and is
    quarantined; the four 100/500 Hz pairs are found by content; every record is accounted for."""
    manual = tmp_path / "ecgs"
    shutil.copytree(TESTS_DATA, manual, ignore=shutil.ignore_patterns("keras"))
    data = (manual / (TRUNCATED + ".dat")).read_bytes()
    (manual / (TRUNCATED + ".dat")).write_bytes(data[: len(data) // 3])
    directories = prepare_both("pclr_ecg_folder", tmp_path / "out", manual)
    assert "found by content: 4" in capsys.readouterr().out
    assert_same_data_set("pclr_ecg_folder", tmp_path / "out", directories)

    beam = directories["beam"]
    quarantine = pd.read_csv(beam / "quarantine.csv")
    assert sorted(quarantine[["record_id", "reason"]].values.tolist()) == [
        ["ptbdb/patient001/s0010_re", "too_long"],  # 38.4 s
        [TRUNCATED, "corrupt_file"],
    ]
    duplicates = pd.read_csv(beam / "duplicates.csv")
    pairs = sorted(zip(duplicates.record_id, duplicates.kept_record_id, strict=True))
    assert pairs == [
        (f"ptbxl/records100/00000/{i}_lr", f"ptbxl/records500/00000/{i}_hr")
        for i in ("00055", "00056", "00273", "00298")
    ]
    assert set(duplicates.found_by) == {"content"}
    written = pd.concat(
        pd.read_parquet(path) for path in sorted(beam.glob("index-*.parquet"))
    ).record_id
    records = pd.read_csv(manual / "records.csv").record
    accounted = [*written, *quarantine.record_id, *duplicates.record_id]
    assert sorted(accounted) == sorted(records)  # each record exactly once


@pytest.mark.skipif(not REAL.exists(), reason="shared/data/real_ecg_dev is not present")
def test_real_ecgs_are_the_same_on_beam_and_copies_are_found_by_content(tmp_path):
    """The PTB-XL patients of real_ecg_dev with 500 Hz files (both rates, no ``ecg_group``) and
    PTB DB's 38 s record (quarantined): every 100/500 Hz pair is one recording, no two different
    ECGs of one patient are merged, and Beam writes the same data set."""
    records = pd.read_csv(REAL / "records.csv")
    with_500 = records.patient_id[records.record.str.startswith("ptbxl/records500")]
    chosen = records[records.patient_id.isin(with_500) | (records.sampling_rate == 1000)]
    root = tmp_path / "ecgs"
    for record in chosen.record:
        for source in REAL.glob(record + ".*"):
            target = root / source.relative_to(REAL)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    chosen[["record", "patient_id", "sampling_rate", "age", "sex"]].to_csv(
        root / "records.csv", index=False
    )
    directories = prepare_both("pclr_ecg_folder", tmp_path / "out", root)
    assert_same_data_set("pclr_ecg_folder", tmp_path / "out", directories)

    # Reference: files of one patient with one recording time are one recording (PTB-XL's two
    # rates, and two ecg_ids of PTB-XL 1.0.1 that hold byte-identical waveforms: 456/457, 459/460).
    # Each keeps the highest rate, then the first record path.
    ptbxl = chosen[chosen.ecg_id.notna()].sort_values(
        ["sampling_rate", "record"], ascending=[False, True]
    )
    expected = []
    for _, recording in ptbxl.groupby(["patient_id", "recording_date"]):
        kept = recording.record.iloc[0]
        expected += [(record, kept) for record in recording.record.iloc[1:]]
    assert len(expected) == 53 + 2  # 53 ECGs at both rates; 457 and 460 repeat 456 and 459
    duplicates = pd.read_csv(directories["beam"] / "duplicates.csv")
    assert set(duplicates.found_by) == {"content"}
    found = sorted(zip(duplicates.record_id, duplicates.kept_record_id, strict=True))
    assert found == sorted(expected)
