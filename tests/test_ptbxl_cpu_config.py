"""The ``ptbxl`` builder's ``cpu`` config (the CPU-sized reproduction's data, docs/reproduction.md)
on the real PTB-XL records of ``tests/data``: one example per ``ecg_id`` from the 100 Hz file even
where a 500 Hz file exists, 1,024 samples equal to ``wfdb.rdrecord`` linearly interpolated over
the 10 s record, labels and folds from the ECG-to-patient table."""

from __future__ import annotations

import ast
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
import wfdb

from pclr_jax.data.builders.ptbxl import Ptbxl
from pclr_jax.data.prepared import load_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, test_data_dir):
    """A PTB-XL table of the test records naming their 500 Hz files where they exist (both rates
    on disk), prepared with the ``cpu`` config."""
    records = pd.read_csv(test_data_dir / "records.csv")
    ptbxl = records[records.source == "PTB-XL"]
    root = tmp_path_factory.mktemp("ptbxl")
    shutil.copytree(test_data_dir / "ptbxl" / "records100", root / "records100")
    shutil.copytree(test_data_dir / "ptbxl" / "records500", root / "records500")
    low = ptbxl[ptbxl.sampling_rate == 100]
    high = ptbxl[ptbxl.sampling_rate == 500].set_index("ecg_id").record.str.removeprefix("ptbxl/")
    assert low.ecg_id.isin(high.index).any()  # the config must pass over existing 500 Hz files
    table = pd.DataFrame(
        {
            "ecg_id": low.ecg_id.astype(int),
            "patient_id": low.patient_id.str.removeprefix("ptbxl_").astype(int),
            "age": low.age,
            "sex": low.sex.map({"M": 0, "F": 1}),
            "scp_codes": low.labels,
            "strat_fold": low.strat_fold.astype(int),
            "filename_lr": low.record.str.removeprefix("ptbxl/"),
            "filename_hr": low.ecg_id.map(high).to_numpy(),
        }
    )
    table.to_csv(root / "ptbxl_patient_map.csv", index=False)
    data_dir = tmp_path_factory.mktemp("prepared")
    builder = Ptbxl(config="cpu", data_dir=str(data_dir), workers=1)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    return root, table, data_dir


def test_cpu_config_is_100_hz_at_1024_samples(prepared):
    root, table, data_dir = prepared
    split = load_prepared("ptbxl", "train", data_dir, config="cpu")  # folds 1-7 here: all train
    assert len(split.source) == len(table)
    by_id = table.set_index(table.ecg_id.astype(str))
    for i in range(len(split.source)):
        example = split.source[i]
        record_id = example["record_id"].decode()
        row = by_id.loc[record_id]
        assert example["ecg"].shape == (1024, 12)
        assert example["sampling_rate"] == 100.0
        assert example["patient_id"].decode() == str(row.patient_id)
        index_row = split.index.iloc[i]
        assert index_row["record_id"] == record_id
        assert index_row["strat_fold"] == row.strat_fold
        codes = ast.literal_eval(row.scp_codes)
        assert index_row["lvh"] == int("LVH" in codes)
        assert index_row["af"] == int(bool({"AFIB", "AFLT"} & codes.keys()))
        signal = wfdb.rdrecord(str(root / row.filename_lr)).p_signal
        grid = np.linspace(0.0, 1.0, 1024)
        source = np.linspace(0.0, 1.0, len(signal))
        expected = np.stack([np.interp(grid, source, lead) for lead in signal.T], axis=1)
        np.testing.assert_allclose(
            example["ecg"].astype(np.float64), expected, atol=2e-3, rtol=2e-3, err_msg=record_id
        )
