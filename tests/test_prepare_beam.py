"""``pclr prepare`` on Apache Beam (DirectRunner) writes the same data set as the process pool:
examples bit for bit, splits, index rows, quarantine and duplicate lists, counts; for every builder:
the synthetic tiny config, ``tests/data`` (with a truncated record that fails in a worker), real
ECGs of ``shared/data/real_ecg_dev``, and small PTB-XL, MIMIC-IV-ECG and CODE-15% layouts.
Skipped where ``apache-beam`` is not installed."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("apache_beam")

from test_builders import MIMIC_LEADS, fake_signal, write_wfdb  # noqa: E402

from pclr_jax.commands.cli import main as cli_main  # noqa: E402
from pclr_jax.data.builders.beam_prepare import patient_chunks  # noqa: E402
from pclr_jax.data.prepared import load_prepared, prepared_directory  # noqa: E402

TESTS_DATA = pathlib.Path(__file__).resolve().parent / "data"
REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ecg_dev"
PTBXL_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
TRUNCATED = "ptbxl/records100/00000/00730_lr"  # in tests/data, patient ptbxl_565


def prepare_both(name: str, data_dir: pathlib.Path, manual_dir=None, pool_workers=0) -> dict:
    """The data set (tiny config) prepared twice with ``pclr prepare``: the default path with
    ``pool_workers`` processes (0: the same code in this process, which saves a worker's start)
    and Beam's DirectRunner."""
    directories = {}
    runs = (("pool", ["--workers", str(pool_workers)]), ("beam", ["--beam-runner", "DirectRunner"]))
    for path, extra in runs:
        argv = ["prepare", name, "--data-dir", str(data_dir / path), "--config", "tiny", *extra]
        if manual_dir is not None:
            argv += ["--manual-dir", str(manual_dir)]
        assert cli_main(argv) == 0
        directories[path] = prepared_directory(name, data_dir / path, "tiny")
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
    directories = prepare_both("pclr_ecg_folder", tmp_path / "out", manual, pool_workers=1)
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


def ptbxl_layout(root: pathlib.Path, rng) -> None:
    rows = []
    for ecg_id, patient, fold in [(1, 15709, 3), (2, 15709, 3), (3, 20372, 9), (4, 17014, 10)]:
        filename = f"records100/00000/{ecg_id:05d}_lr"
        write_wfdb(root / filename, fake_signal(rng, 1000, 100.0), 100.0, PTBXL_LEADS)
        rows.append((ecg_id, patient, 50.0, ecg_id % 2, "{'NORM': 100.0}", fold, filename))
    columns = ["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_lr"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "ptbxl_patient_map.csv", index=False)


def mimic_iv_ecg_layout(root: pathlib.Path, rng) -> None:
    rows = []
    for subject in (10000032, 10000117, 10000980):
        for k in range(2):
            study = subject * 10 + k
            relative = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
            write_wfdb(root / relative, fake_signal(rng, 5000, 500.0), 500.0, MIMIC_LEADS)
            rows.append((subject, study, f"{study}", "2180-07-23 08:44:00", relative))
    columns = ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "record_list.csv", index=False)


def code15_layout(root: pathlib.Path, rng) -> None:
    """Four exams: two of 10 s padded to 4096 samples, one of 7 s (too short), one whose HDF5
    file is missing; exam 103 repeats exam 101's tracing (a copy found by content)."""
    import h5py

    root.mkdir(parents=True)
    tracings = np.zeros((4, 4096, 12), np.float32)
    for row, (start, length) in enumerate([(48, 4000), (648, 2800), (48, 4000)]):
        tracings[row, start : start + length] = fake_signal(rng, length, 400.0)
    tracings[3] = tracings[0]  # exam 105 repeats exam 101
    with h5py.File(root / "exams_part0.hdf5", "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.array([101, 102, 103, 105])
    exams = pd.DataFrame(
        {
            "exam_id": [101, 102, 103, 104, 105],
            "age": [61, 45, 61, 30, 61],
            "is_male": [True, False, True, False, True],
            "patient_id": [7, 7, 9, 9, 7],
            "trace_file": ["exams_part0.hdf5"] * 3 + ["exams_part1.hdf5", "exams_part0.hdf5"],
        }
    )
    for label in ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"):
        exams[label] = False
    exams.to_csv(root / "exams.csv", index=False)


@pytest.mark.parametrize(
    "name,layout",
    [("ptbxl", ptbxl_layout), ("mimic_iv_ecg", mimic_iv_ecg_layout), ("code15", code15_layout)],
)
def test_collection_builders_are_the_same_on_beam(tmp_path, name, layout):
    layout(tmp_path / "source", np.random.default_rng(0))
    directories = prepare_both(name, tmp_path / "out", tmp_path / "source")
    assert_same_data_set(name, tmp_path / "out", directories)
    if name == "code15":
        report = json.loads((directories["beam"] / "prepare_report.json").read_text())
        assert report["quarantined_by_reason"] == {"missing_file": 1, "too_short": 1}
        assert (report["duplicates_by_content"], report["written_total"]) == (1, 2)


def test_beam_options_reach_the_pipeline_and_bad_ones_are_refused(capsys):
    import argparse

    from pclr_jax.commands.prepare import download_config

    def args(runner, *options):
        return argparse.Namespace(manual_dir=None, beam_runner=runner, beam_option=list(options))

    config = download_config(args("DirectRunner", "direct_num_workers=2", "--job_name=x=y"))
    assert config.beam_runner == "DirectRunner"
    assert config.beam_options.get_all_options()["direct_num_workers"] == 2
    assert config.beam_options.get_all_options()["job_name"] == "x=y"
    assert download_config(args(None)).beam_runner is None
    with pytest.raises(ValueError, match="needs --beam-runner"):
        download_config(args(None, "a=b"))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        download_config(args("DirectRunner", "no_value"))
    assert cli_main(["prepare", "pclr_synthetic", "--beam-option", "a=b"]) == 2
    assert "--beam-option needs --beam-runner" in capsys.readouterr().err
