"""``load_encoder``/``Encoder.embed`` against a direct ``PCLRModel.apply``, and ``pclr embed`` end
to end on the shipped real records with a tiny random-weight model saved as .h5 and as Orbax."""

import shutil

import jax
import numpy as np
import pandas as pd
import pytest

from pclr_jax import load_encoder
from pclr_jax.cli import main
from pclr_jax.encoder_checkpoint import save_encoder
from pclr_jax.keras_export import write_keras_h5
from pclr_jax.model import EncoderConfig, PCLRModel, init_variables
from pclr_jax.preprocess import ECGValidationError, prepare_ecg
from pclr_jax.records import iter_records, read_wfdb

TINY = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(32, 24),
)


def nontrivial_variables(config, seed=0):
    """Random variables with batch-norm statistics away from (0, 1)."""
    variables = init_variables(config, jax.random.key(seed))  # PCLRModel layout, head if any
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(
        lambda x: rng.uniform(0.5, 1.5, x.shape).astype(np.float32), variables["batch_stats"]
    )
    return {"params": variables["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(variables, .h5 path, Orbax directory) of the tiny model with its projection head."""
    root = tmp_path_factory.mktemp("weights")
    variables = nontrivial_variables(TINY)
    write_keras_h5(root / "tiny.h5", TINY, variables)
    save_encoder(root / "tiny_orbax", TINY, variables)
    return variables, root / "tiny.h5", root / "tiny_orbax"


def reference(variables, ecgs, output):
    """One unbatched, unjitted apply of the model on all ECGs."""
    embed, projection = PCLRModel(TINY).apply(variables, ecgs, train=False)
    return np.asarray(projection if output == "final" else embed)


@pytest.mark.parametrize("output", ["final", "embed"])
def test_embed_matches_model_apply_for_both_formats(weights, output):
    variables, h5_path, orbax_dir = weights
    ecgs = np.random.default_rng(1).normal(size=(11, 256, 12)).astype(np.float32)
    expected = reference(variables, ecgs, output)
    assert expected.shape == (11, 24 if output == "final" else 32)
    for path in (h5_path, orbax_dir):
        encoder = load_encoder(path, output=output, batch_size=4)  # 3 batches, last one padded
        assert encoder.config == TINY and encoder.embed_dim == expected.shape[1]
        out = encoder.embed(ecgs)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        # Batching never mixes ECGs: one ECG alone gives its row.
        np.testing.assert_allclose(encoder.embed(ecgs[5:6]), expected[5:6], rtol=1e-5, atol=1e-5)


def test_headless_weights_output_the_embedding(tmp_path):
    config = TINY.replace(head_sizes=())
    variables = nontrivial_variables(config, seed=3)
    write_keras_h5(tmp_path / "headless.h5", config, variables)
    ecgs = np.random.default_rng(2).normal(size=(3, 256, 12)).astype(np.float32)
    expected = np.asarray(PCLRModel(config).apply(variables, ecgs, method=PCLRModel.embed))
    for output in ("final", "embed"):
        encoder = load_encoder(tmp_path / "headless.h5", output=output)
        np.testing.assert_allclose(encoder.embed(ecgs), expected, rtol=1e-5, atol=1e-5)


def test_embed_rejects_wrong_input(weights):
    encoder = load_encoder(weights[1], batch_size=4)
    with pytest.raises(ValueError, match="256 samples, 12 leads"):
        encoder.embed(np.zeros((2, 4096, 12), np.float32))
    bad = np.zeros((3, 256, 12), np.float32)
    bad[1, 7, 3] = np.nan
    with pytest.raises(ValueError, match=r"\[1\]"):
        encoder.embed(bad)
    assert encoder.embed(np.zeros((0, 256, 12))).shape == (0, 24)
    with pytest.raises(FileNotFoundError):
        load_encoder(weights[1].parent / "absent.h5")


@pytest.fixture(scope="module")
def inputs(test_data_dir, tmp_path_factory):
    """A folder of real records (PTB-XL 100 and 500 Hz, CinC, the 38.4 s PTB record) with one
    truncated PTB-XL file, plus an .npy file of two ECGs, one of them with a NaN."""
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "records"
    meta = pd.read_csv(test_data_dir / "records.csv")
    chosen = [*meta["record"][meta["record"].str.contains("records100")][:6], *meta["record"][-5:]]
    for record in chosen:
        for source in test_data_dir.glob(record + ".*"):
            target = folder / source.relative_to(test_data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    truncated = folder / (chosen[2] + ".dat")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    arrays = np.stack([read_wfdb(test_data_dir / chosen[0]).signal] * 2).astype(np.float32)
    arrays[1, 10, 4] = np.nan
    np.save(root / "arrays.npy", arrays)
    return folder, root / "arrays.npy", chosen


def run_embed(weights_path, inputs, output, *extra):
    folder, npy, _ = inputs
    argv = ["embed", "--weights", str(weights_path), "--input", str(folder), str(npy)]
    return main([*argv, "--output", str(output), "--batch-size", "4", *extra])


def test_cli_end_to_end_with_report(weights, inputs, tmp_path, capsys, test_data_dir):
    variables, h5_path, orbax_dir = weights
    folder, _, chosen = inputs
    n_in = len(chosen) + 2  # WFDB records + two npy rows
    assert run_embed(h5_path, inputs, tmp_path / "out.csv") == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out.csv")
    rejected = pd.read_csv(tmp_path / "out.rejected.csv")  # default NA parsing: reasons stay text
    assert list(table.columns) == ["sample_id", *[f"latent_{i}" for i in range(24)]]
    assert len(table) + len(rejected) == n_in
    assert list(rejected.columns) == ["sample_id", "path", "reason", "message"]
    reasons = dict(zip(rejected["sample_id"].str.rsplit("/", n=1).str[-1], rejected["reason"],
                       strict=True))  # fmt: skip
    assert reasons == {
        chosen[2].rsplit("/", 1)[-1]: "corrupt_file",
        "s0010_re": "too_long",
        "arrays:1": "non_finite",
    }
    assert f"{n_in} records: {len(table)} embedded" in printed and "3 rejected" in printed
    paths = set(rejected["path"])
    assert paths == {str(folder / chosen[2]), str(folder / chosen[-1]), str(inputs[1])}
    # Values: the row of a real record equals the model applied to prepare_ecg of rdrecord's data.
    record = chosen[4]
    ecg = prepare_ecg(read_wfdb(test_data_dir / record), 256)
    row = table.set_index("sample_id").loc[str(folder / record)].to_numpy()
    np.testing.assert_allclose(row, reference(variables, ecg[None], "final")[0], atol=1e-5)

    # Orbax weights, the pooled layer, Parquet output; the PTB record accepted without the
    # duration check.
    out = tmp_path / "embed.parquet"
    assert (
        run_embed(orbax_dir, inputs, out, "--output-layer", "embed", "--expected-duration", "0")
        == 0
    )
    table = pd.read_parquet(out)
    rejected = pd.read_csv(tmp_path / "embed.rejected.csv")
    assert table.shape == (n_in - 2, 33) and len(rejected) == 2
    ptb = table.set_index("sample_id").loc[str(folder / chosen[-1])].to_numpy()
    ptb_ecg = prepare_ecg(read_wfdb(test_data_dir / chosen[-1]), 256, expected_duration_s=None)
    np.testing.assert_allclose(ptb, reference(variables, ptb_ecg[None], "embed")[0], atol=1e-5)


def test_cli_strict_stops_at_the_first_bad_record(weights, inputs, tmp_path, capsys):
    assert run_embed(weights[1], inputs, tmp_path / "out.tsv", "--strict") == 1
    # The folder's files come sorted: ptbdb/ (too long) before ptbxl/ (one truncated).
    assert "error (too_long): record " in capsys.readouterr().err
    assert not (tmp_path / "out.tsv").exists()
    # Without bad records, --strict succeeds and the TSV holds every record.
    clean = tmp_path / "clean.npy"
    np.save(clean, np.load(inputs[1])[:1])
    argv = ["embed", "--weights", str(weights[1]), "--input", str(clean), "--strict"]
    assert main([*argv, "--output", str(tmp_path / "clean.tsv")]) == 0
    assert pd.read_csv(tmp_path / "clean.tsv", sep="\t")["sample_id"].tolist() == ["clean:0"]


def test_embed_records_python_api(weights, test_data_dir):
    variables, h5_path, _ = weights
    encoder = load_encoder(h5_path, batch_size=4)
    good = [test_data_dir / f"ptbxl/records100/00000/{i}_lr" for i in ("00055", "00056", "00177")]
    paths = [*good, test_data_dir / "ptbdb/patient001/s0010_re", good[0]]
    result = encoder.embed_records(iter_records(paths))
    assert result.sample_ids == [str(p) for p in good]
    assert [(e.reason, e.record_id) for e in result.rejected] == [
        ("too_long", str(paths[3])),
        ("duplicate_id", str(good[0])),
    ]
    ecgs = np.stack([prepare_ecg(read_wfdb(p), 256) for p in good])
    np.testing.assert_allclose(result.embeddings, reference(variables, ecgs, "final"), atol=1e-5)
    with pytest.raises(ECGValidationError, match="s0010_re"):
        encoder.embed_records(iter_records(paths), strict=True)


def test_single_lead_model_needs_its_lead_named(tmp_path, test_data_dir):
    config = TINY.replace(n_leads=1, head_sizes=())
    variables = nontrivial_variables(config, seed=4)
    write_keras_h5(tmp_path / "lead_ii.h5", config, variables)
    record = test_data_dir / "cinc2021/E07501"
    argv = ["embed", "--weights", str(tmp_path / "lead_ii.h5"), "--input", str(record) + ".hea"]
    with pytest.raises(SystemExit, match="1 lead"):
        main([*argv, "--output", str(tmp_path / "x.csv")])
    assert main([*argv, "--output", str(tmp_path / "ii.csv"), "--leads", "ii"]) == 0
    row = pd.read_csv(tmp_path / "ii.csv").iloc[0]
    ecg = prepare_ecg(read_wfdb(record), 256, leads=("II",))
    expected = PCLRModel(config).apply(variables, ecg[None], method=PCLRModel.embed)
    assert row["sample_id"] == str(record)
    np.testing.assert_allclose(row.iloc[1:].to_numpy(float), np.asarray(expected)[0], atol=1e-5)
