"""``pclr embed`` as a parallel, streaming, resumable pipeline: the same table whatever the
number of reader processes and equal to the serial ``Encoder.embed_records``; a run killed at a
random point and run again gives the uninterrupted table; a prepared split as input; two
``jax.distributed`` processes; Apache Beam's DirectRunner; and the report of every record in.

A tiny random-weight encoder (256 samples) keeps each run to seconds."""

import contextlib
import io
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import jax
import numpy as np
import pandas as pd
import pytest
from multiprocess_jobs import finish_job, job_environment, start_job

from pclr_jax import load_encoder
from pclr_jax.commands.cli import main
from pclr_jax.embedding.parts import parts_directory
from pclr_jax.embedding.plan import Plan, Span
from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.signals.preprocess import prepare_ecg
from pclr_jax.signals.records import ArrayOptions, input_files, iter_input_files
from pclr_jax.weights.keras_export import write_keras_h5

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(),
)
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.h5"
    write_keras_h5(path, TINY, init_variables(TINY, jax.random.key(0)))
    return path


def _random_ecgs(rng, n: int) -> np.ndarray:
    return rng.normal(0, 0.3, (n, 2500, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def folder(test_data_dir, tmp_path_factory) -> pathlib.Path:
    """20 records: 8 real WFDB records (one truncated), an .npy of 7 ECGs (one with a NaN), an
    HDF5 array whose third exam id repeats the first, a corrupt .h5 and a 1-D .npy in a
    subfolder; plus an .npy of 0 ECGs, which holds no record."""
    root = tmp_path_factory.mktemp("inputs") / "cohort"
    records = sorted(p.with_suffix("") for p in (test_data_dir / "ptbxl").rglob("*.hea"))[:8]
    for record in records:
        for file in record.parent.glob(record.name + ".*"):
            target = root / file.relative_to(test_data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)
    truncated = root / records[3].relative_to(test_data_dir).with_suffix(".dat")
    truncated.write_bytes(truncated.read_bytes()[:3000])
    rng = np.random.default_rng(0)
    arrays = _random_ecgs(rng, 7)
    arrays[4, 100, 2] = np.nan
    np.save(root / "arrays.npy", arrays)
    with h5py.File(root / "exams.h5", "w") as f:
        f["tracings"] = _random_ecgs(rng, 3)
        f["exam_id"] = np.array([101, 102, 101])
    (root / "sub").mkdir()
    (root / "sub" / "corrupt.h5").write_bytes(b"not an HDF5 file" * 10)
    np.save(root / "sub" / "flat.npy", np.zeros(5000, np.float32))
    np.save(root / "empty.npy", np.zeros((0, 2500, 12), np.float32))
    return root


def embed(weights, inputs, output, *extra) -> int:
    argv = ["embed", "--weights", str(weights), "--input", *map(str, inputs)]
    return main([*argv, "--output", str(output), "--batch-size", "4", *extra])


@pytest.fixture(scope="module")
def runs(weights, folder, tmp_path_factory):
    """``pclr embed`` on the folder with 0, 1 and 2 reader processes, parts of 5 records:
    ``{workers: (table, rejected report, printed lines)}``."""
    root = tmp_path_factory.mktemp("runs")
    results = {}
    for workers in (0, 1, 2):
        out = root / f"workers{workers}.parquet"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = embed(weights, [folder], out, "--workers", str(workers), "--part-records", "5")
        assert code == 0
        rejected = pd.read_csv(root / f"workers{workers}.rejected.csv", keep_default_na=False)
        results[workers] = (pd.read_parquet(out), rejected, printed.getvalue())
        assert not parts_directory(out).exists()
    return results


def test_output_is_the_same_whatever_the_workers_and_equals_the_serial_path(runs, weights, folder):
    table, rejected, _ = runs[0]
    for workers in (1, 2):
        pd.testing.assert_frame_equal(runs[workers][0], table, check_exact=True)
        pd.testing.assert_frame_equal(runs[workers][1], rejected)
    # Today's serial path: Encoder.embed_records over the same records, in one process.
    encoder = load_encoder(weights, batch_size=4)
    serial = encoder.embed_records(iter_input_files(input_files([folder]), ArrayOptions()))
    assert table["sample_id"].tolist() == serial.sample_ids
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), serial.embeddings, atol=1e-5)
    assert rejected["sample_id"].tolist() == [e.record_id for e in serial.rejected]
    assert rejected["reason"].tolist() == [e.reason for e in serial.rejected]
    assert list(table.columns) == ["sample_id", *[f"latent_{i}" for i in range(32)]]


def test_every_record_is_a_row_or_a_rejection_named_by_its_relative_id(runs, folder):
    table, rejected, printed = runs[2]
    assert len(table) + len(rejected) == 20
    reasons = dict(zip(rejected["sample_id"], rejected["reason"], strict=True))
    truncated = next(i for i in reasons if i.startswith("ptbxl/"))
    assert reasons == {
        "arrays:4": "non_finite",
        truncated: "corrupt_file",
        "101": "duplicate_id",
        "sub/corrupt": "corrupt_file",
        "sub/flat": "bad_shape",
    }
    assert table["sample_id"].tolist().count("101") == 1  # the first of the repeated ids stays
    duplicate = rejected[rejected["reason"] == "duplicate_id"].iloc[0]
    assert f"already given by {folder / 'exams.h5'}" in duplicate["message"]
    assert set(rejected["path"]) >= {str(folder / "sub" / "corrupt.h5")}
    assert "20 records: 15 embedded (32-d" in printed and "5 rejected" in printed
    assert f"1 file(s) held no ECG (0 rows), not counted as records: {folder / 'empty.npy'}" in (
        printed
    )


def _parts_written(directory: pathlib.Path) -> int:
    try:
        return sum(name.startswith("part-") for name in os.listdir(directory))
    except FileNotFoundError:
        return 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_run_killed_at_a_random_point_continues_to_the_uninterrupted_table(
    weights, test_data_dir, tmp_path, capsys
):
    inputs = [test_data_dir / name for name in ("ptbxl", "cinc2021", "ptbdb")]
    reference = tmp_path / "reference.csv"
    assert embed(weights, inputs, reference, "--part-records", "2", "--workers", "0") == 0
    expected = pd.read_csv(reference)
    n_parts = -(-(len(expected) + len(pd.read_csv(tmp_path / "reference.rejected.csv"))) // 2)
    output = tmp_path / "out.csv"
    argv = [sys.executable, "-m", "pclr_jax.commands.cli", "embed", "--weights", str(weights),
            "--input", *map(str, inputs), "--output", str(output), "--batch-size", "4",
            "--part-records", "2", "--workers", "1"]  # fmt: skip
    seed = random.randrange(10**6)
    kill_after = random.Random(seed).randrange(1, n_parts - 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 (not a pipe: its reader keeps that)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    while _parts_written(parts_directory(output)) < kill_after and proc.poll() is None:
        assert time.monotonic() < deadline, "no parts written in time"
        time.sleep(0.001)
    running = proc.poll() is None
    readers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)  # the run itself, as a user's kill -9 or the OOM killer
    proc.wait()
    log.close()
    assert running, f"the run ended before {kill_after} parts (seed {seed}): nothing was killed"
    assert readers  # the reader process (and multiprocessing's resource tracker)
    while any(pathlib.Path(f"/proc/{pid}").exists() for pid in readers):  # orphans leave too
        assert time.monotonic() < deadline, f"reader processes {readers} outlived the run"
        time.sleep(0.1)
    assert not output.exists()
    killed_at = _parts_written(parts_directory(output))
    assert killed_at >= kill_after

    # Other settings are refused, naming them; the same command continues the run.
    capsys.readouterr()
    assert embed(weights, inputs, output, "--part-records", "2", "--batch-size", "8") == 2
    assert "batch_size: 4 then, 8 now" in capsys.readouterr().err
    assert embed(weights, inputs, output, "--part-records", "2", "--workers", "1") == 0
    printed = capsys.readouterr().out
    assert f"continued an interrupted run: {2 * killed_at} of" in printed
    table = pd.read_csv(output)
    assert table["sample_id"].is_unique
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "out.rejected.csv"), pd.read_csv(tmp_path / "reference.rejected.csv")
    )
    assert not parts_directory(output).exists()


def test_a_prepared_split_is_embedded_by_its_record_ids(weights, tiny_synthetic_data_dir, tmp_path):
    from pclr_jax.data.prepared import load_prepared
    from pclr_jax.signals.leads import STANDARD_LEADS
    from pclr_jax.signals.records import ECGRecord

    out = tmp_path / "test.csv"
    argv = ["embed", "--weights", str(weights), "--data", "pclr_synthetic", "--data-dir",
            str(tiny_synthetic_data_dir), "--split", "test", "--data-config", "tiny"]  # fmt: skip
    assert main([*argv, "--output", str(out), "--workers", "1", "--batch-size", "4"]) == 0
    table = pd.read_csv(out)
    split = load_prepared("pclr_synthetic", "test", tiny_synthetic_data_dir, "tiny")
    assert len(split) > 4
    assert table["sample_id"].tolist() == split.index["record_id"].tolist()
    assert pd.read_csv(tmp_path / "test.rejected.csv").empty
    # A prepared ECG is 10 s at 256 samples: 25.6 Hz, the standard leads in mV.
    records = [
        ECGRecord(str(i), np.asarray(split.source[i]["ecg"], np.float32), STANDARD_LEADS, 25.6)
        for i in range(len(split))
    ]
    ecgs = np.stack([prepare_ecg(record, 256) for record in records])
    expected = load_encoder(weights).embed(ecgs)
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, atol=1e-5)


def test_two_processes_embed_their_shares_into_one_table(runs, weights, folder, tmp_path):
    output = tmp_path / "two.parquet"
    command = [sys.executable, "-m", "pclr_jax.commands.cli", "embed", "--weights", str(weights),
               "--input", str(folder), "--output", str(output), "--batch-size", "4",
               "--part-records", "5", "--workers", "0"]  # fmt: skip
    env = {**job_environment(), "PYTHONPATH": str(ROOT)}
    outputs = finish_job(start_job(command, cwd=tmp_path, env=env), TIMEOUT_S)
    assert "20 records: 15 embedded" in outputs[0]
    # Parts of 5 records: process 0 embeds parts 0 and 2, process 1 parts 1 and 3; 0 reports.
    assert "embedding (process 1): 10/10 ECG" in outputs[1] and "records:" not in outputs[1]
    table, rejected, _ = runs[0]
    pd.testing.assert_frame_equal(pd.read_parquet(output), table, check_exact=False, atol=1e-6)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "two.rejected.csv", keep_default_na=False), rejected
    )
    assert not parts_directory(output).exists()


def test_beam_direct_runner_gives_the_local_table(runs, weights, folder, tmp_path):
    output = tmp_path / "beam.parquet"
    extra = ["--part-records", "5", "--beam-runner", "DirectRunner"]
    assert embed(weights, [folder], output, *extra) == 0
    table, rejected, _ = runs[0]
    pd.testing.assert_frame_equal(pd.read_parquet(output), table, check_exact=True)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "beam.rejected.csv", keep_default_na=False), rejected
    )


def test_plan_cuts_positions_into_parts_over_entries():
    plan = Plan([1, 0, 4, 1, 3], part_records=4)  # an empty entry, 9 records
    assert (plan.n_records, plan.n_parts) == (9, 3)
    assert plan.part_positions(2) == range(8, 9)
    assert plan.spans(range(0, 4)) == [Span(0, 0, 1), Span(2, 0, 3)]
    assert plan.spans(range(4, 8)) == [Span(2, 3, 4), Span(3, 0, 1), Span(4, 0, 2)]
    assert plan.chunks(1, 3) == [range(4, 7), range(7, 8)]
    assert plan.entries_of(np.array([0, 1, 4, 5, 8])).tolist() == [0, 2, 2, 3, 4]
