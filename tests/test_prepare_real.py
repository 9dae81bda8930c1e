"""The generic folder builder on real ECGs (PTB-XL at 100 and 500 Hz, CinC 2021) from
``shared/data/real_ecg_dev``: values equal ``wfdb.rdrecord`` after an independent resampling,
patients intact, splits patient-disjoint, one copy per recording, quarantine counts, index order,
and reading in a fresh process without TensorFlow."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
import wfdb

from pclr_jax.data.builders import PclrEcgFolder
from pclr_jax.data.prepared import load_prepared

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ecg_dev"
STANDARD = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# PTB-XL patients with two ECGs that exist at both 100 and 500 Hz, others with 100 Hz only.
PATIENTS = ("ptbxl_20191", "ptbxl_21551", "ptbxl_565", "ptbxl_340", "ptbxl_437", "ptbxl_19497")
CORRUPT = "ptbxl/records100/00000/00730_lr"  # truncated below (patient ptbxl_565)
N_SAMPLES = 256


def ml4h_resample(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """Independent reference: linear interpolation of the whole record onto n_samples points."""
    source = np.linspace(0.0, 1.0, len(signal))
    target = np.linspace(0.0, 1.0, n_samples)
    return np.stack([np.interp(target, source, lead) for lead in signal.T], axis=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The subset copied to a temporary folder (one record truncated), prepared with 1 worker."""
    records = pd.read_csv(REAL / "records.csv")
    chosen = records[
        records.patient_id.isin(PATIENTS)
        | records.record.isin(records[records.source.str.startswith("PhysioNet")].record[:4])
        | records.record.isin(records[records.n_ecgs_of_patient_in_set == 1].record[:4])
    ].copy()
    root = tmp_path_factory.mktemp("real_ecgs")
    for record in chosen.record:
        for source in REAL.glob(record + ".*"):
            target = root / source.relative_to(REAL)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    data = (root / (CORRUPT + ".dat")).read_bytes()
    (root / (CORRUPT + ".dat")).write_bytes(data[: len(data) // 3])
    is_ptbxl = chosen.ecg_id.notna()
    chosen["ecg_group"] = np.where(
        is_ptbxl, "ptbxl_" + chosen.ecg_id.fillna(0).astype(int).astype(str), chosen.record
    )
    table = chosen[["record", "patient_id", "ecg_group", "sampling_rate", "age", "sex", "labels"]]
    table.to_csv(root / "records.csv", index=False)
    data_dir = tmp_path_factory.mktemp("prepared_real")
    builder = PclrEcgFolder(config="tiny", data_dir=str(data_dir), workers=1)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    return root, table, data_dir, pathlib.Path(builder.data_dir)


def _examples(data_dir):
    rows = []
    for split in ("train", "validation", "test"):
        try:
            split_data = load_prepared("pclr_ecg_folder", split, data_dir, config="tiny")
        except KeyError:
            continue
        for i in range(len(split_data.source)):
            rows.append((split, split_data.source[i], split_data.index.iloc[i]))
    return rows


def test_values_equal_wfdb_after_resampling_and_patients_are_intact(prepared):
    root, table, data_dir, _ = prepared
    examples = _examples(data_dir)
    assert len(examples) > 10
    by_record = table.set_index("record")
    for _, item, row in examples:
        record_id = item["record_id"].decode()
        assert record_id == row["record_id"]  # index row i describes source[i]
        source = by_record.loc[record_id]
        assert item["patient_id"].decode() == row["patient_id"] == source.patient_id
        reference = wfdb.rdrecord(str(root / record_id))
        names = [name.upper() for name in reference.sig_name]
        signal = reference.p_signal[:, [names.index(name) for name in STANDARD]]
        np.testing.assert_allclose(
            item["ecg"].astype(np.float32),
            ml4h_resample(signal, N_SAMPLES),
            rtol=2e-3,
            atol=2e-3,
            err_msg=record_id,
        )
        assert item["sampling_rate"] == reference.fs
        assert row["sex"] == {"M": 0, "F": 1}.get(source.sex, -1)
        np.testing.assert_equal(row["age"], np.float32(source.age))  # NaN when unknown
    splits_of_patient = pd.DataFrame([(r["patient_id"], s) for s, _, r in examples]).groupby(0)[1]
    assert splits_of_patient.nunique().max() == 1


def test_one_copy_per_recording_the_500_hz_one(prepared):
    root, table, data_dir, directory = prepared
    index = pd.DataFrame([row for _, _, row in _examples(data_dir)])
    assert index["ecg_group"].is_unique  # never two copies of one ECG, in any split
    duplicates = pd.read_csv(directory / "duplicates.csv")
    assert len(duplicates) > 0
    assert duplicates.record_id.str.contains("records100").all()
    assert duplicates.kept_record_id.str.contains("records500").all()
    kept = index.set_index("record_id")
    for _, dup in duplicates.iterrows():
        assert kept.loc[dup.kept_record_id, "patient_id"] == dup.patient_id
        assert kept.loc[dup.kept_record_id, "sampling_rate"] == 500.0
    # Patients still have two distinct ECGs for pairing.
    assert (index.groupby("patient_id")["ecg_group"].nunique() >= 2).sum() >= 4


def test_quarantine_counts_add_up(prepared):
    _, table, data_dir, directory = prepared
    report = json.loads((directory / "prepare_report.json").read_text())
    quarantine = pd.read_csv(directory / "quarantine.csv")
    duplicates = pd.read_csv(directory / "duplicates.csv")
    assert quarantine.record_id.tolist() == [CORRUPT]
    assert quarantine.reason.iloc[0] in ("corrupt_file", "header_mismatch")
    assert CORRUPT in quarantine.message.iloc[0] or "00730" in quarantine.message.iloc[0]
    written = len(_examples(data_dir))
    assert report["input_records"] == len(table) == written + len(quarantine) + len(duplicates)
    assert report["written_total"] == written and report["quarantined"] == 1


def test_readable_in_a_fresh_process_without_tensorflow(prepared):
    _, _, data_dir, _ = prepared
    script = textwrap.dedent(
        f"""
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("import tensorflow worked")
        import tensorflow_datasets as tfds
        from pclr_jax.data.prepared import load_prepared
        split = load_prepared("pclr_ecg_folder", "train", {str(data_dir)!r}, config="tiny")
        source = tfds.data_source("pclr_ecg_folder/tiny", split="train", data_dir={str(data_dir)!r})
        ids = [source[i]["record_id"].decode() for i in range(len(source))]
        assert ids == split.index.record_id.tolist(), "index order differs from the source"
        print(len(ids), source[0]["ecg"].dtype)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "float16"
