"""``load_encoder``/``Encoder.embed`` against a direct ``PCLRModel.apply``, and ``pclr embed`` end
to end on the shipped real records with a tiny random-weight model saved as .h5 and as Orbax."""

import shutil

import h5py
import jax
import numpy as np
import pandas as pd
import pytest

from pclr_jax import load_encoder
from pclr_jax.commands.cli import main
from pclr_jax.model.encoder import EncoderConfig, PCLRModel, init_variables
from pclr_jax.signals.preprocess import ECGValidationError, prepare_ecg
from pclr_jax.signals.records import iter_records, read_wfdb
from pclr_jax.weights.encoder_checkpoint import save_encoder
from pclr_jax.weights.keras_export import write_keras_h5

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


def third_party_h5(path, config, variables):
    """A Keras file as another program writes it: ours without the pclr-jax marker."""
    write_keras_h5(path, config, variables)
    with h5py.File(path, "r+") as f:
        del f.attrs["pclr_jax_default_output"]
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(variables, .h5 path, Orbax directory, third-party .h5 path) of the tiny model with its
    projection head; the first two written by pclr-jax."""
    root = tmp_path_factory.mktemp("weights")
    variables = nontrivial_variables(TINY)
    write_keras_h5(root / "tiny.h5", TINY, variables)
    save_encoder(root / "tiny_orbax", TINY, variables)
    third_party = third_party_h5(root / "third_party.h5", TINY, variables)
    return variables, root / "tiny.h5", root / "tiny_orbax", third_party


def reference(variables, ecgs, output):
    """One unbatched, unjitted apply of the model on all ECGs."""
    embed, projection = PCLRModel(TINY).apply(variables, ecgs, train=False)
    return np.asarray(projection if output == "final" else embed)


@pytest.mark.parametrize("output", ["final", "embed"])
def test_embed_matches_model_apply_for_both_formats(weights, output):
    variables, h5_path, orbax_dir, _ = weights
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
    encoder = load_encoder(weights[3], batch_size=4)
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
    variables, _, orbax_dir, third_party = weights
    folder, _, chosen = inputs
    n_in = len(chosen) + 2  # WFDB records + two npy rows
    # A third-party Keras file: its own output (the projection), as ml4h.
    assert run_embed(third_party, inputs, tmp_path / "out.csv") == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "output 'final', the projection head's output (24-d): no pclr-jax marker" in (
        captured.err
    )
    table = pd.read_csv(tmp_path / "out.csv")
    rejected = pd.read_csv(tmp_path / "out.rejected.csv")  # default NA parsing: reasons stay text
    assert list(table.columns) == ["sample_id", *[f"latent_{i}" for i in range(24)]]
    assert len(table) + len(rejected) == n_in
    assert list(rejected.columns) == ["sample_id", "path", "reason", "message"]
    # Ids: records of the folder by their path relative to it, the .npy by its name.
    reasons = dict(zip(rejected["sample_id"], rejected["reason"], strict=True))
    assert reasons == {chosen[2]: "corrupt_file", chosen[-1]: "too_long", "arrays:1": "non_finite"}
    assert set(table["sample_id"]) == {*chosen, "arrays:0"} - {chosen[2], chosen[-1]}
    assert f"{n_in} records: {len(table)} embedded" in printed and "3 rejected" in printed
    paths = set(rejected["path"])
    assert paths == {str(folder / chosen[2]), str(folder / chosen[-1]), str(inputs[1])}
    # Values: the row of a real record equals the model applied to prepare_ecg of rdrecord's data.
    record = chosen[4]
    ecg = prepare_ecg(read_wfdb(test_data_dir / record), 256)
    row = table.set_index("sample_id").loc[record].to_numpy()
    np.testing.assert_allclose(row, reference(variables, ecg[None], "final")[0], atol=1e-5)

    # Orbax weights written by pclr-jax: the pooled layer by default; Parquet output; the PTB
    # record accepted without the duration check.
    out = tmp_path / "embed.parquet"
    assert run_embed(orbax_dir, inputs, out, "--expected-duration", "0") == 0
    assert "output 'embed', the pooled 'embed' layer (32-d): the weights were written by " in (
        capsys.readouterr().err
    )
    table = pd.read_parquet(out)
    rejected = pd.read_csv(tmp_path / "embed.rejected.csv")
    assert table.shape == (n_in - 2, 33) and len(rejected) == 2
    ptb = table.set_index("sample_id").loc[chosen[-1]].to_numpy()
    ptb_ecg = prepare_ecg(read_wfdb(test_data_dir / chosen[-1]), 256, expected_duration_s=None)
    np.testing.assert_allclose(ptb, reference(variables, ptb_ecg[None], "embed")[0], atol=1e-5)


def test_cli_strict_stops_at_the_first_bad_record(weights, inputs, tmp_path, capsys):
    assert run_embed(weights[1], inputs, tmp_path / "out.tsv", "--strict") == 1
    # The folder's files come sorted: ptbdb/ (too long) before ptbxl/ (one truncated).
    assert "error (too_long): record " in capsys.readouterr().err
    assert not (tmp_path / "out.tsv").exists() and not (tmp_path / "out.tsv.parts").exists()
    # Without bad records, --strict succeeds and the TSV holds every record.
    clean = tmp_path / "clean.npy"
    np.save(clean, np.load(inputs[1])[:1])
    argv = ["embed", "--weights", str(weights[1]), "--input", str(clean), "--strict"]
    assert main([*argv, "--output", str(tmp_path / "clean.tsv")]) == 0
    assert pd.read_csv(tmp_path / "clean.tsv", sep="\t")["sample_id"].tolist() == ["clean:0"]


def test_embed_records_python_api(weights, test_data_dir):
    variables, _, _, third_party = weights
    encoder = load_encoder(third_party, batch_size=4)
    good = [test_data_dir / f"ptbxl/records100/00000/{i}_lr" for i in ("00055", "00056", "00177")]
    paths = [*good, test_data_dir / "ptbdb/patient001/s0010_re"]
    # Files given one by one are named by their record name; an id read twice is rejected.
    records = [*iter_records(paths), *iter_records(good[:1], sample_id="name")]
    result = encoder.embed_records(records)
    assert result.sample_ids == ["00055_lr", "00056_lr", "00177_lr"]
    assert [(e.reason, e.record_id) for e in result.rejected] == [
        ("too_long", "s0010_re"),
        ("duplicate_id", "00055_lr"),
    ]
    assert f"already given by {good[0]}" in str(result.rejected[1])
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
    assert row["sample_id"] == "E07501"
    np.testing.assert_allclose(row.iloc[1:].to_numpy(float), np.asarray(expected)[0], atol=1e-5)


def embed_table(weights_path, inputs, output, *extra):
    assert main(["embed", "--weights", str(weights_path), "--input", *map(str, inputs)]
                + ["--output", str(output), "--batch-size", "4", *extra]) == 0  # fmt: skip
    return pd.read_csv(output)


def test_sample_ids_survive_moving_the_folder(weights, inputs, tmp_path, monkeypatch, capsys):
    source, npy, chosen = inputs
    folder = tmp_path / "data"
    shutil.copytree(source, folder)
    shutil.copy(npy, folder / "arrays.npy")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, moved)
    ids = [r.record_id for r in iter_records(folder)]
    assert ids == sorted({*chosen, "arrays:0", "arrays:1"})  # relative, without extension
    monkeypatch.chdir(tmp_path)  # the moved copy typed as a relative path
    assert [r.record_id for r in iter_records("elsewhere/copy")] == ids
    assert [r.record_id for r in iter_records(moved, sample_id="path")] == [
        f"{moved}/{i}" for i in ids
    ]
    names = [r.record_id for r in iter_records(folder, sample_id="name")]
    assert names == [i.rsplit("/", 1)[-1] for i in ids]
    # End to end: the same table from the original (absolute) and the moved (relative) copy.
    first = embed_table(weights[3], [folder], tmp_path / "a.csv")
    second = embed_table(weights[3], ["elsewhere/copy"], tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, second)
    # Two inputs giving the same ids: a clear error naming both, before anything is embedded.
    capsys.readouterr()
    argv = ["embed", "--weights", str(weights[3]), "--input", str(folder), "elsewhere/copy"]
    assert main([*argv, "--output", str(tmp_path / "c.csv")]) == 2
    error = capsys.readouterr().err
    assert "two inputs give the sample id 'arrays' (--sample-id relative)" in error
    assert f"{folder / 'arrays.npy'} and elsewhere/copy/arrays.npy" in error
    assert "--sample-id name or path" in error
    assert not (tmp_path / "c.csv").exists()


def flat_lead_npy(test_data_dir, record, path):
    """A real 12-lead ECG with V2, V4 and V6 all zero (as some Ningbo records of CinC 2021)."""
    signal = read_wfdb(test_data_dir / record).signal[:, :12].copy()
    signal[:, [7, 9, 11]] = 0.0
    np.save(path, signal[None].astype(np.float32))
    return signal


def test_allow_embeds_a_record_that_fails_a_check_and_lists_it(
    weights, inputs, test_data_dir, tmp_path, capsys
):
    from pclr_jax.commands.embed import add_parser
    from pclr_jax.signals.preprocess import ALLOWABLE_CHECKS, prepare_checked, resample_ml4h
    from pclr_jax.signals.records import SAMPLE_ID_MODES

    variables, _, _, third_party = weights
    signal = flat_lead_npy(test_data_dir, inputs[2][0], tmp_path / "ningbo.npy")
    out = tmp_path / "out.csv"
    assert embed_table(third_party, [tmp_path / "ningbo.npy"], out).empty
    rejected = pd.read_csv(tmp_path / "out.rejected.csv")
    assert rejected["reason"].tolist() == ["flat_lead"]
    assert "leads V2 (0 mV), V4 (0 mV), V6 (0 mV) are flat" in rejected["message"][0]

    table = embed_table(third_party, [tmp_path / "ningbo.npy"], out, "--allow", "flat_lead")
    allowed = pd.read_csv(tmp_path / "out.allowed.csv")
    assert table["sample_id"].tolist() == allowed["sample_id"].tolist() == ["ningbo:0"]
    assert allowed["reason"].tolist() == ["flat_lead"]
    assert (
        "embedded despite a failed check (--allow flat_lead): 1 records" in capsys.readouterr().out
    )
    expected = reference(variables, resample_ml4h(signal, 256)[None].astype(np.float32), "final")
    np.testing.assert_allclose(table.iloc[0, 1:].to_numpy(float), expected[0], atol=1e-5)

    # Only checks that leave an embeddable ECG can be allowed; the CLI offers exactly those.
    import argparse

    parser = argparse.ArgumentParser().add_subparsers()
    add_parser(parser)
    actions = {a.dest: a for a in parser.choices["embed"]._actions}
    assert tuple(actions["allow"].choices) == ALLOWABLE_CHECKS
    assert tuple(actions["sample_id"].choices) == SAMPLE_ID_MODES
    record = next(iter_records(tmp_path / "ningbo.npy"))
    with pytest.raises(ValueError, match="cannot be allowed"):
        prepare_checked(record, 256, allow=("non_finite",))


def test_default_output_follows_where_the_weights_come_from(weights, tmp_path):
    import argparse

    from pclr_jax.commands.probe import _embed_with_weights
    from pclr_jax.weights.output_layer import orbax_marker

    variables, h5_path, orbax_dir, third_party = weights
    assert [load_encoder(p).output for p in (h5_path, orbax_dir, third_party)] == [
        "embed",
        "embed",
        "final",
    ]
    assert load_encoder(h5_path, output="final").output == "final"
    # pclr convert carries the marker both ways.
    converted = {
        "third_party_orbax": ("keras-to-orbax", third_party),
        "ours_orbax": ("keras-to-orbax", h5_path),
        "ours.h5": ("orbax-to-keras", orbax_dir),
    }
    for name, (direction, source) in converted.items():
        assert main(["convert", direction, str(source), str(tmp_path / name)]) == 0
    assert load_encoder(tmp_path / "third_party_orbax").output == "final"
    assert load_encoder(tmp_path / "ours_orbax").output == "embed"
    assert load_encoder(tmp_path / "ours.h5").output == "embed"
    # Encoders exported by training before the marker existed (a step, not from Keras).
    assert orbax_marker({"step": 360}) == "embed"
    assert orbax_marker({"step": 360, "keras_output_layer": "projection"}) is None
    # pclr probe --weights and the Python API agree with pclr embed.
    ecgs = np.random.default_rng(7).normal(size=(5, 256, 12)).astype(np.float32)
    sources = {}
    args = argparse.Namespace(weights=[("", str(h5_path))], output_layer=None, embed_batch_size=4)
    _embed_with_weights(args, ecgs, sources)
    expected = reference(variables, ecgs, "embed")
    np.testing.assert_allclose(sources["pclr"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load_encoder(h5_path).embed(ecgs), expected, rtol=1e-5, atol=1e-5)


def test_embed_splits_batches_over_all_local_devices(weights):
    orbax_dir = weights[2]
    ecgs = np.random.default_rng(8).normal(size=(13, 256, 12)).astype(np.float32)
    everywhere = load_encoder(orbax_dir, batch_size=6)  # 6 -> 8: one ECG per device
    one = load_encoder(orbax_dir, batch_size=6, devices=jax.local_devices()[:1])
    assert everywhere.n_devices == len(jax.local_devices()) == 8 and one.n_devices == 1
    np.testing.assert_array_equal(everywhere.embed(ecgs), one.embed(ecgs))
