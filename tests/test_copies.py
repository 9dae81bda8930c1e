"""Copies of one recording found by content (:mod:`pclr_jax.data.copies`), on real PTB-XL files
of ``tests/data`` (the 100 Hz and 500 Hz files of one ECG versus two ECGs of one patient) and on
hand-made fingerprints; no Beam needed."""

from __future__ import annotations

import numpy as np
import pytest

from pclr_jax.data import copies
from pclr_jax.data.builders.settle import settle_patient
from pclr_jax.data.ingest import Outcome, PrepareSpec
from pclr_jax.data.record_tasks import read_wfdb_task, record_fingerprint


def fingerprint_of(test_data_dir, record: str) -> np.ndarray:
    path = str(test_data_dir / record)
    return record_fingerprint(read_wfdb_task({"record_id": record, "path": path}), PrepareSpec())


def test_the_two_files_of_one_ptbxl_ecg_are_copies_and_two_ecgs_are_not(test_data_dir):
    low = fingerprint_of(test_data_dir, "ptbxl/records100/00000/00055_lr")
    high = fingerprint_of(test_data_dir, "ptbxl/records500/00000/00055_hr")
    other = fingerprint_of(test_data_dir, "ptbxl/records100/00000/00056_lr")  # same patient
    assert low.shape == high.shape == (copies.FINGERPRINT_SAMPLES, 12)
    assert copies.correlation(low, high) >= copies.COPY_CORRELATION
    assert copies.correlation(low, other) < 0.9
    assert copies.copy_groups([other, low, high]) == [[1, 2]]


def test_correlation_is_the_window_median_of_pooled_centred_correlations():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 12))
    b = a + 3.0  # offset: centring ignores it
    b[450:] = 0.0  # one window of ten differs: the median ignores it
    assert copies.correlation(a, b) == pytest.approx(1.0)
    windows = np.array_split(np.arange(500), copies.WINDOWS)
    c = -a
    c[windows[0]] = a[windows[0]]
    assert copies.correlation(a, c) == pytest.approx(-1.0)
    assert copies.correlation(a, np.zeros_like(a)) == 0.0


def test_groups_are_transitive_and_keep_the_highest_rate_then_the_first():
    base = np.sin(np.linspace(0, 40, 500))[:, None] * np.ones((1, 12))
    drift = np.cos(np.linspace(0, 40, 500))[:, None] * np.ones((1, 12))
    prints = [base, base + 0.15 * drift, base + 0.3 * drift, drift]
    assert copies.correlation(prints[0], prints[2]) < copies.COPY_CORRELATION
    assert copies.copy_groups(prints) == [[0, 1, 2]]  # 0~1 and 1~2, so 0 and 2 too
    assert copies.keeper([0, 1, 2], [100.0, 500.0, 500.0, 0.0]) == 1
    assert copies.keeper([0, 2], [float("nan"), 100.0, 100.0]) == 2


def test_settle_patient_drops_copies_like_an_ecg_group_and_quarantines_failures():
    wave = np.sin(np.linspace(0, 60, 256))[:, None] * np.linspace(0.5, 1.5, 12)[None, :]
    other = np.cos(np.linspace(0, 47, 256))[:, None] * np.ones((1, 12))
    ecgs = [wave, wave * 1.01, other]
    tasks = [
        {"record_id": r, "patient_id": "p", "ecg_group": r, "path": f"/{r}"}
        for r in ("a_lr", "a_hr", "b", "bad")
    ]
    outcomes = [
        Outcome("a_lr", ecgs[0].astype(np.float16), 100.0),
        Outcome("a_hr", ecgs[1].astype(np.float16), 500.0),
        Outcome("b", ecgs[2].astype(np.float16), 500.0),
        Outcome("bad", None, float("nan"), "corrupt_file", "bad: truncated"),
    ]
    settled = settle_patient(tasks, outcomes, 10, "train", ("record_id", "patient_id"))
    assert [(k, e["record_id"]) for k, e in settled.examples] == [(11, "a_hr"), (12, "b")]
    assert [(k, e["reason"]) for k, e in settled.quarantined] == [(13, "corrupt_file")]
    assert settled.duplicates == [
        (
            10,
            {
                "record_id": "a_lr",
                "patient_id": "p",
                "path": "/a_lr",
                "ecg_group": "a_hr",
                "kept_record_id": "a_hr",
                "found_by": "content",
            },
        )
    ]
