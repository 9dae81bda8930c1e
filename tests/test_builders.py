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

from pclr_jax.data import synthetic
from pclr_jax.data.builders import PclrSynthetic
from pclr_jax.data.builders.base import COMMON_LABELS, drop_duplicate_copies, normalize_manifest
from pclr_jax.data.prepared import load_prepared
from pclr_jax.data.splits import (
    assign_splits,
    check_patient_disjoint,
    patient_fraction,
    splits_from_folds,
)


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
    from pclr_jax.cli import main
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
