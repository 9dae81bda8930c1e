"""Prepared data sets: split assignment, duplicate handling, the synthetic builder end to end
(values, index order, counts, resumption) and reading without TensorFlow in a fresh process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from pclr_jax.data.builders import PclrSynthetic
from pclr_jax.data.builders.base import COMMON_LABELS, drop_duplicate_copies, normalize_manifest
from pclr_jax.data.prepared import load_prepared
from pclr_jax.data.splits import (
    assign_splits,
    check_patient_disjoint,
    patient_fraction,
    splits_from_folds,
)
from pclr_jax.data.synthetic import generator as synthetic


def test_assign_splits_is_a_function_of_the_patient_alone():
    ids = [f"p{i}" for i in range(4000)]
    splits = assign_splits(ids)
    # Same answer for a subset, in another order, with repeats: no dependence on other patients.
    subset = ids[::7][::-1] * 2
    lookup = dict(zip(ids, splits, strict=True))
    np.testing.assert_array_equal(assign_splits(subset), [lookup[p] for p in subset])
    counts = pd.Series(splits).value_counts(normalize=True)
    # Binomial standard error at n=4000 is <= 0.008; allow 4 of them.
    assert abs(counts["train"] - 0.8) < 0.032
    assert abs(counts["validation"] - 0.1) < 0.032
    assert abs(counts["test"] - 0.1) < 0.032
    # The documented rule: the first 8 bytes of sha256("pclr-jax:<id>") against 0.8 / 0.9.
    position = int.from_bytes(hashlib.sha256(b"pclr-jax:p0").digest()[:8], "big") / 2**64
    assert patient_fraction("p0") == position
    expected = "train" if position < 0.8 else "validation" if position < 0.9 else "test"
    assert splits[0] == expected
    assert (assign_splits(ids, salt="other") != splits).any()


def test_assign_splits_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(["a"], {"train": 0.5, "test": 0.2})
    with pytest.raises(ValueError, match=">= 0"):
        assign_splits(["a"], {"train": 1.5, "test": -0.5})


def test_splits_from_folds_and_disjointness_check():
    np.testing.assert_array_equal(
        splits_from_folds([1, 8, 9, 10, 3]), ["train", "train", "validation", "test", "train"]
    )
    check_patient_disjoint(["a", "a", "b"], ["train", "train", "test"])
    with pytest.raises(ValueError, match="'a'"):
        check_patient_disjoint(["a", "a", "b"], ["train", "test", "test"])


def test_duplicate_copies_keep_the_highest_rate_and_never_cross_patients():
    manifest = normalize_manifest(
        pd.DataFrame(
            {
                "record_id": ["lr1", "hr1", "lr2", "solo"],
                "patient_id": ["p", "p", "p", "q"],
                "ecg_group": ["ecg1", "ecg1", "ecg2", None],
                "sampling_rate": [100, 500, 100, 250],
                "path": ["a", "b", "c", "d"],
            }
        ),
        COMMON_LABELS,
    )
    kept, dropped = drop_duplicate_copies(manifest)
    assert kept["record_id"].tolist() == ["hr1", "lr2", "solo"]
    assert kept.loc[kept.record_id == "solo", "ecg_group"].item() == "solo"
    assert dropped[["record_id", "kept_record_id", "ecg_group"]].values.tolist() == [
        ["lr1", "hr1", "ecg1"]
    ]
    manifest.loc[manifest.record_id == "lr1", "patient_id"] = "other"
    with pytest.raises(ValueError, match="ecg1"):
        drop_duplicate_copies(manifest)


def test_manifest_rejects_repeated_record_ids_and_missing_patients():
    with pytest.raises(ValueError, match="repeated"):
        normalize_manifest(pd.DataFrame({"record_id": ["a", "a"], "patient_id": ["p", "q"]}), {})
    with pytest.raises(ValueError, match="no patient id"):
        normalize_manifest(pd.DataFrame({"record_id": ["a", "b"], "patient_id": ["p", None]}), {})


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("prepared")
    builder = PclrSynthetic(config="tiny", data_dir=str(data_dir), workers=0)
    builder.download_and_prepare()
    return data_dir


def test_synthetic_builder_writes_the_generator_output_in_index_order(synthetic_dir):
    tiny = next(c for c in PclrSynthetic.BUILDER_CONFIGS if c.name == "tiny")
    ecgs, metadata = synthetic.generate(tiny.synthetic_config())
    reference = dict(zip(metadata["record_id"], range(len(metadata)), strict=True))
    seen, patients = [], {}
    for split in ("train", "validation", "test"):
        prepared = load_prepared("pclr_synthetic", split, synthetic_dir, config="tiny")
        assert len(prepared.source) == len(prepared.index) > 0
        for i in range(len(prepared.source)):
            item = prepared.source[i]
            row = prepared.index.iloc[i]
            record_id = item["record_id"].decode()
            assert record_id == row["record_id"]  # index row i describes source[i]
            k = reference[record_id]
            np.testing.assert_array_equal(item["ecg"], ecgs[k].astype(np.float16))
            assert item["ecg"].dtype == np.float16 and item["ecg"].shape == (256, 12)
            assert item["patient_id"].decode() == row["patient_id"] == str(metadata.patient_id[k])
            assert item["sex"] == row["sex"] == metadata.sex[k]
            assert item["af"] == row["af"] == metadata.af[k]
            assert np.float32(item["age"]) == row["age"] == np.float32(metadata.age[k])
            assert np.float32(item["heart_rate"]) == np.float32(metadata.heart_rate_bpm[k])
            assert item["sampling_rate"] == pytest.approx(25.6)
            patients.setdefault(row["patient_id"], set()).add(split)
            seen.append(record_id)
    assert sorted(seen) == sorted(metadata["record_id"])  # every ECG exactly once
    assert all(len(s) == 1 for s in patients.values())  # patient-disjoint splits
    report = json.loads(
        (synthetic_dir / "pclr_synthetic/tiny/1.0.0/prepare_report.json").read_text()
    )
    assert report["input_records"] == report["written_total"] == len(metadata)
    assert report["quarantined"] == report["duplicates"] == 0


def test_prepare_again_reuses_the_data_set(synthetic_dir):
    shard = next((synthetic_dir / "pclr_synthetic/tiny/1.0.0").glob("*train.array_record*"))
    before = shard.stat().st_mtime_ns
    PclrSynthetic(config="tiny", data_dir=str(synthetic_dir), workers=0).download_and_prepare()
    assert shard.stat().st_mtime_ns == before


def test_prepared_split_is_readable_without_tensorflow(synthetic_dir):
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        assert importlib.util.find_spec("tensorflow") is None, "tensorflow is installed"
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("import tensorflow worked")
        import tensorflow_datasets as tfds
        source = tfds.data_source(
            "pclr_synthetic/tiny", split="train", data_dir={str(synthetic_dir)!r}
        )
        item = source[len(source) - 1]
        from pclr_jax.data.prepared import load_prepared
        prepared = load_prepared("pclr_synthetic", "train", {str(synthetic_dir)!r}, config="tiny")
        assert prepared.index.record_id.iloc[-1] == item["record_id"].decode()
        assert "pclr_jax.data.builders" not in sys.modules
        assert "tensorflow" not in sys.modules
        print(len(source), item["ecg"].dtype, "x".join(map(str, item["ecg"].shape)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    n_train = len(load_prepared("pclr_synthetic", "train", synthetic_dir, config="tiny").index)
    assert done.stdout.split()[-3:] == [str(n_train), "float16", "256x12"]


def test_prepare_command_prints_the_counts_and_skips_a_prepared_set(synthetic_dir, capsys):
    from pclr_jax.commands.cli import main
    from pclr_jax.commands.prepare import DATASETS
    from pclr_jax.data.builders import BUILDERS

    assert set(DATASETS) == set(BUILDERS)
    assert (
        main(["prepare", "pclr_synthetic", "--config", "tiny", "--data-dir", str(synthetic_dir)])
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(
        (synthetic_dir / "pclr_synthetic/tiny/1.0.0/prepare_report.json").read_text()
    )
    assert "already prepared" in out
    assert f"records in {report['input_records']:,} = written {report['written_total']:,}" in out
    assert main(["prepare", "pclr_synthetic", "--config", "nope", "--data-dir", "x"]) == 2


# Builders of real collections, each on a tiny fake copy in its documented layout.

MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
STANDARD = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ml4h_resample(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """Independent reference: linear interpolation of the whole record onto n_samples points."""
    source = np.linspace(0.0, 1.0, len(signal))
    target = np.linspace(0.0, 1.0, n_samples)
    return np.stack([np.interp(target, source, lead) for lead in signal.T], axis=1)


def fake_signal(rng, n: int, fs: float) -> np.ndarray:
    t = np.arange(n) / fs
    phase = rng.uniform(0, 2 * np.pi, 12)
    return np.sin(2 * np.pi * 1.2 * t[:, None] + phase) * rng.uniform(0.2, 1.5, 12)


def write_wfdb(path, signal: np.ndarray, fs: float, leads: list[str]) -> None:
    import wfdb

    path.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        path.name,
        fs=fs,
        units=["mV"] * 12,
        sig_name=leads,
        p_signal=signal,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(path.parent),
    )


def prepare(builder_cls, manual_dir, data_dir, config="tiny"):
    import tensorflow_datasets as tfds

    builder = builder_cls(config=config, data_dir=str(data_dir), workers=0)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


def all_examples(name, data_dir, config="tiny"):
    out = {}
    for split in ("train", "validation", "test"):
        try:
            prepared = load_prepared(name, split, data_dir, config=config)
        except KeyError:
            continue
        for i in range(len(prepared.source)):
            item = prepared.source[i]
            assert item["record_id"].decode() == prepared.index.record_id.iloc[i]
            out[item["record_id"].decode()] = (split, item, prepared.index.iloc[i])
    return out


def test_mimic_iv_ecg_layout(tmp_path):
    from pclr_jax.data.builders import MimicIvEcg

    rng = np.random.default_rng(0)
    root, rows, signals = tmp_path / "mimic", [], {}
    for subject in (10000032, 10000117, 10000980):
        for k in range(2):
            study = subject * 10 + k
            relative = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
            signals[str(study)] = (subject, fake_signal(rng, 5000, 500.0))
            write_wfdb(root / relative, signals[str(study)][1], 500.0, MIMIC_LEADS)
            rows.append((subject, study, f"{study}", "2180-07-23 08:44:00", relative))
    pd.DataFrame(rows, columns=["subject_id", "study_id", "file_name", "ecg_time", "path"]).to_csv(
        root / "record_list.csv", index=False
    )
    prepare(MimicIvEcg, root, tmp_path / "out")
    examples = all_examples("mimic_iv_ecg", tmp_path / "out")
    assert sorted(examples) == sorted(signals)
    order = [MIMIC_LEADS.index(name) for name in STANDARD]
    for record_id, (_, item, row) in examples.items():
        subject, signal = signals[record_id]
        assert row["patient_id"] == str(subject) and item["sampling_rate"] == 500.0
        assert row["sex"] == -1 and np.isnan(row["age"])
        reference = ml4h_resample(signal[:, order], 256)
        np.testing.assert_allclose(item["ecg"].astype(np.float32), reference, atol=2e-3, rtol=2e-3)
    by_patient = pd.DataFrame([(r[2]["patient_id"], r[0]) for r in examples.values()])
    assert by_patient.groupby(0)[1].nunique().max() == 1


def test_code15_layout_trims_padding_and_quarantines(tmp_path):
    import h5py

    from pclr_jax.data.builders import Code15

    rng = np.random.default_rng(1)
    root = tmp_path / "code15"
    root.mkdir()
    ten = np.zeros((4096, 12), np.float32)
    ten[48:4048] = fake_signal(rng, 4000, 400.0)
    seven = np.zeros((4096, 12), np.float32)
    seven[648:3448] = fake_signal(rng, 2800, 400.0)
    other = np.zeros((4096, 12), np.float32)
    other[48:4048] = fake_signal(rng, 4000, 400.0)
    with h5py.File(root / "exams_part0.hdf5", "w") as f:
        f["tracings"] = np.stack([ten, seven, other, np.zeros((4096, 12), np.float32)])
        f["exam_id"] = np.array([101, 102, 103, 0])
    pd.DataFrame(
        {
            "exam_id": [101, 102, 103, 104],
            "age": [61, 45, 61, 30],
            "is_male": [True, False, True, False],
            "nn_predicted_age": [60.0, 44.0, 62.0, 31.0],
            "1dAVb": [False, False, True, False],
            "RBBB": [False, True, False, False],
            "LBBB": False,
            "SB": False,
            "AF": [True, False, False, False],
            "ST": False,
            "patient_id": [7, 7, 9, 9],
            "normal_ecg": [False, True, False, True],
            "death": [False, None, None, None],
            "timey": [1.5, None, None, None],
            "trace_file": ["exams_part0.hdf5", "exams_part0.hdf5", None, None],
        }
    ).to_csv(root / "exams.csv", index=False)
    builder = prepare(Code15, root, tmp_path / "out")
    examples = all_examples("code15", tmp_path / "out")
    assert sorted(examples) == ["101", "103"]
    _, item, row = examples["101"]
    np.testing.assert_allclose(
        item["ecg"].astype(np.float32), ml4h_resample(ten[48:4048], 256), atol=2e-3, rtol=2e-3
    )
    assert (row["patient_id"], row["sex"], row["af"], row["age"]) == ("7", 0, 1, 61.0)
    assert examples["103"][2]["first_degree_av_block"] == 1
    assert examples["103"][2]["patient_id"] == "9" and examples["103"][2]["sex"] == 0
    quarantine = pd.read_csv(f"{builder.data_dir}/quarantine.csv").set_index("record_id")
    assert quarantine.loc[102, "reason"] == "too_short"  # 7 s exam, 10 s expected
    assert quarantine.loc[104, "reason"] == "missing_file"
    with open(f"{builder.data_dir}/prepare_report.json") as f:
        report = json.load(f)
    assert report["input_records"] == 4 == report["written_total"] + report["quarantined"]


def test_ptbxl_from_the_patient_map_table(tmp_path):
    from pclr_jax.data.builders import Ptbxl

    rng = np.random.default_rng(2)
    root = tmp_path / "ptbxl"
    rows = []
    for ecg_id, patient, fold, age, codes in [
        (1, 15709, 3, 56.0, "{'LVOLT': 0.0, 'NORM': 100.0, 'SR': 0.0}"),
        (2, 15709, 3, 57.0, "{'AFIB': 100.0, 'IMI': 50.0, 'LVH': 100.0}"),
        (3, 20372, 9, 300.0, "{'CLBBB': 100.0}"),
        (4, 17014, 10, 40.0, "{'SR': 0.0}"),
    ]:
        filename = f"records100/00000/{ecg_id:05d}_lr"
        write_wfdb(
            root / filename,
            fake_signal(rng, 1000, 100.0),
            100.0,
            ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"],
        )
        rows.append((ecg_id, patient, age, ecg_id % 2, codes, fold, filename))
    columns = ["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_lr"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "ptbxl_patient_map.csv", index=False)
    prepare(Ptbxl, root, tmp_path / "out")
    examples = all_examples("ptbxl", tmp_path / "out")
    assert {k: v[0] for k, v in examples.items()} == {
        "1": "train",
        "2": "train",
        "3": "validation",
        "4": "test",
    }
    row = examples["2"][2]
    assert (row["af"], row["lvh"], row["superclass_MI"], row["superclass_HYP"]) == (1, 1, 1, 1)
    assert (row["superclass_NORM"], row["superclass_CD"]) == (0, 0)
    assert examples["1"][2]["superclass_NORM"] == 1 and examples["1"][2]["af"] == 0
    assert examples["3"][2]["superclass_CD"] == 1 and np.isnan(examples["3"][2]["age"])
    assert (
        examples["4"][2][[f"superclass_{c}" for c in ("NORM", "MI", "STTC", "CD", "HYP")]].sum()
        == 0
    )
    import wfdb

    record = wfdb.rdrecord(str(root / "records100/00000/00003_lr"))
    np.testing.assert_allclose(
        examples["3"][1]["ecg"].astype(np.float32),
        ml4h_resample(record.p_signal, 256),
        atol=2e-3,
        rtol=2e-3,
    )
