"""Keras .h5 <-> Flax/Orbax conversion against Keras 3 (KERAS_BACKEND=jax) as the reference."""

import json
import pathlib

import h5py
import jax
import keras
import numpy as np
import pytest
from keras_reference import (
    GRAPHS,
    ODD,
    SHARED_NAMES,
    TINY,
    build_keras_encoder,
    build_shared,
    randomize,
    shared_graph,
)

from pclr_jax.commands.cli import main
from pclr_jax.model.encoder import EncoderConfig, PCLRModel, count_parameters, init_variables
from pclr_jax.signals.leads import STANDARD_LEADS
from pclr_jax.signals.preprocess import prepare_ecg
from pclr_jax.signals.records import read_wfdb
from pclr_jax.weights.encoder_checkpoint import read_metadata, restore_encoder, save_encoder
from pclr_jax.weights.keras_export import model_config, write_keras_h5
from pclr_jax.weights.keras_graph import parse_model_config, trace_resnet
from pclr_jax.weights.keras_h5 import read_keras_h5, read_str_list_attr

TEST_DATA = pathlib.Path(__file__).parent / "data"

EXPECTED = {
    "pclr": dict(n_leads=12, n_samples=4096, stem_batch_norm=True, head_sizes=(), out="embed"),
    "pclr_with_head": dict(
        n_leads=12, n_samples=4096, stem_batch_norm=True, head_sizes=(320, 320), out="projection"
    ),
    "pclr_lead_i": dict(
        n_leads=1, n_samples=4096, stem_batch_norm=True, head_sizes=(), out="embed"
    ),
    "pclr_lead_ii": dict(
        n_leads=1, n_samples=2500, stem_batch_norm=False, head_sizes=(), out="embed"
    ),
}


def _assert_embeddings_close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


def _final_output(config: EncoderConfig, variables: dict, ecgs: np.ndarray) -> np.ndarray:
    """What Keras' predict returns: the projection with a head, else the embedding."""
    _, projection = jax.jit(PCLRModel(config).apply)(variables, ecgs)
    return np.asarray(projection)


def _h5_weights(path) -> dict[tuple[str, str], np.ndarray]:
    """Every weight of a Keras .h5 file keyed by (layer, short weight name)."""
    out = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        for layer in read_str_list_attr(group, "layer_names"):
            for name in read_str_list_attr(group[layer], "weight_names"):
                out[(layer, name.split("/")[-1].split(":")[0])] = np.asarray(group[layer][name])
    return out


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """Each released graph built by Keras with random weights and BN statistics, saved as .h5.

    Values: (path, Keras count_params, random ECGs (2, samples, leads), Keras predict output).
    Keras' outputs on real ECGs (``REAL_RECORDS`` through ``prepare_ecg``) are kept in
    ``files["real"][name]``.
    """
    directory = tmp_path_factory.mktemp("keras")
    files = {"real": {}}
    for seed, name in enumerate(SHARED_NAMES):
        model = build_shared(name)
        randomize(model, seed)
        shape = model.input_shape[1:]
        ecgs = np.random.default_rng(100 + seed).normal(0, 0.5, (2, *shape)).astype(np.float32)
        path = directory / f"{name}.h5"
        model.save(path)
        files[name] = (path, model.count_params(), ecgs, np.asarray(model.predict(ecgs, verbose=0)))
        real = _real_ecgs(*shape, MODEL_LEADS[name])
        files["real"][name] = (real, np.asarray(model.predict(real, verbose=0)))
    return files


# Real recordings of tests/data: PTB-XL at 500 and 100 Hz, and CinC 2021 (Georgia, 500 Hz).
REAL_RECORDS = (
    "ptbxl/records500/00000/00055_hr",
    "ptbxl/records100/00000/00056_lr",
    "cinc2021/E07500",
)
MODEL_LEADS = {
    "pclr": STANDARD_LEADS,
    "pclr_with_head": STANDARD_LEADS,
    "pclr_lead_i": ("I",),
    "pclr_lead_ii": ("II",),
}


def _real_ecgs(n_samples: int, n_leads: int, leads: tuple[str, ...]) -> np.ndarray:
    """The real records as the model sees them: ``(3, n_samples, n_leads)`` float32 mV."""
    assert len(leads) == n_leads
    return np.stack(
        [
            prepare_ecg(read_wfdb(TEST_DATA / record), n_samples=n_samples, leads=leads)
            for record in REAL_RECORDS
        ]
    )


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_converted_graph_matches_keras_on_real_ecgs(name, keras_files):
    model = read_keras_h5(keras_files[name][0])
    real, keras_out = keras_files["real"][name]
    assert np.ptp(real) > 0.5  # real millivolt signals, not an empty input
    _assert_embeddings_close(_final_output(model.config, model.variables, real), keras_out)


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_released_graph_converts_exactly(name, keras_files):
    path, keras_params, ecgs, keras_out = keras_files[name]
    model = read_keras_h5(path)
    expected = EXPECTED[name]
    assert model.output_layer == expected["out"]
    assert model.input_name == "ecg"
    for key in ("n_leads", "n_samples", "stem_batch_norm", "head_sizes"):
        assert getattr(model.config, key) == expected[key]
    assert model.config.unit_filters == (128, 196, 256, 320)
    assert model.config.downsample == ((2, 4, 4, 4) if name == "pclr_lead_ii" else (4, 4, 4, 4))
    assert count_parameters(model.variables) == keras_params
    if name == "pclr":
        assert keras_params == 6_394_912
    if name == "pclr_with_head":
        assert keras_params == 6_600_352
    _assert_embeddings_close(_final_output(model.config, model.variables, ecgs), keras_out)


def test_keras2_and_keras3_graphs_trace_alike(keras_files):
    """The Keras 2.4 JSON and Keras 3's re-serialisation of it give the same model."""
    with h5py.File(keras_files["pclr_lead_ii"][0], "r") as f:
        keras3 = trace_resnet(parse_model_config(f.attrs["model_config"]))
    keras2 = trace_resnet(parse_model_config(shared_graph("pclr_lead_ii")))
    assert keras3.config == keras2.config
    assert keras3.modules == keras2.modules


def test_hand_written_keras_2_4_file(keras_files, tmp_path):
    """A file laid out as tf.keras 2.4 writes it: the released JSON with __tuple__ encodings,
    ``kernel:0`` weight names and byte-string attributes."""
    source, _, ecgs, keras_out = keras_files["pclr"]
    weights = _h5_weights(source)
    raw = json.loads((GRAPHS / "pclr_keras_model_config.json").read_text())
    order = {"kernel": 0, "gamma": 0, "beta": 1, "moving_mean": 2, "moving_variance": 3}
    path = tmp_path / "keras24.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(raw).encode()
        group = f.create_group("model_weights")
        names = [layer["name"] for layer in raw["config"]["layers"]]
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer in names:
            layer_group = group.create_group(layer)
            mine = sorted((w for (n, w) in weights if n == layer), key=order.__getitem__)
            layer_group.attrs["weight_names"] = np.array(
                [f"{layer}/{w}:0".encode() for w in mine], dtype="S"
            )
            for w in mine:
                layer_group.create_dataset(f"{layer}/{w}:0", data=weights[(layer, w)])
    model = read_keras_h5(path)
    _assert_embeddings_close(_final_output(model.config, model.variables, ecgs), keras_out)


def test_round_trip_keras_orbax_keras_is_exact(keras_files, tmp_path):
    source, _, ecgs, keras_out = keras_files["pclr_with_head"]
    model = read_keras_h5(source)
    save_encoder(tmp_path / "orbax", model.config, model.variables, {"source": "test"})
    assert read_metadata(tmp_path / "orbax")["source"] == "test"
    config, variables = restore_encoder(tmp_path / "orbax")
    assert config == model.config
    exported = tmp_path / "exported.h5"
    assert write_keras_h5(exported, config, variables) == "projection"
    original, written = _h5_weights(source), _h5_weights(exported)
    assert original.keys() == written.keys()
    for key, value in original.items():
        assert written[key].dtype == value.dtype
        np.testing.assert_array_equal(written[key], value, err_msg=str(key))
    reloaded = keras.models.load_model(exported)
    np.testing.assert_allclose(
        np.asarray(reloaded.predict(ecgs, verbose=0)), keras_out, rtol=0, atol=1e-6
    )


def test_written_graph_is_the_released_graph():
    """The generated model_config reproduces the released graphs (names, order, wiring, options)."""
    cases = {
        "pclr": (EncoderConfig(), False),
        "pclr_with_head": (EncoderConfig(), True),
        "pclr_lead_ii": (EncoderConfig(n_leads=1, n_samples=2500, stem_batch_norm=False), False),
    }
    for name, (config, with_head) in cases.items():
        released = shared_graph(name)["config"]["layers"]
        written, _ = model_config(config, with_head)
        written = json.loads(json.dumps(written["config"]["layers"]))
        for ours, theirs in zip(written, released, strict=True):
            assert ours == theirs, ours["name"]


def test_exported_odd_encoder_loads_in_keras(tmp_path):
    """Swish, dropout, a stride-1 unit without skip conv, no stem BN, a 3-layer head."""
    keras_model, _ = build_keras_encoder(ODD, with_head=True)
    randomize(keras_model, seed=7)
    path = tmp_path / "odd_keras.h5"
    keras.Model(keras_model.input, keras_model.outputs[1]).save(path)
    model = read_keras_h5(path)
    assert model.config.downsample == ODD.downsample
    assert model.config.replace(unit_samples=ODD.unit_samples) == ODD
    exported = tmp_path / "odd_exported.h5"
    write_keras_h5(exported, model.config, model.variables)
    ecgs = np.random.default_rng(8).normal(size=(2, ODD.n_samples, ODD.n_leads)).astype("f4")
    expected = np.asarray(keras_model(ecgs, training=False)[1])
    reloaded = np.asarray(keras.models.load_model(exported)(ecgs, training=False))
    _assert_embeddings_close(_final_output(ODD, model.variables, ecgs), expected)
    _assert_embeddings_close(reloaded, expected)


def test_cli_converts_both_ways(keras_files, tmp_path, capsys):
    source, keras_params, ecgs, keras_out = keras_files["pclr_lead_ii"]
    assert main(["convert", "keras-to-orbax", str(source), str(tmp_path / "ckpt")]) == 0
    printed = capsys.readouterr().out
    assert f"parameters: {keras_params:,}" in printed
    assert "2500 samples x 1 leads" in printed and "output layer 'embed'" in printed
    assert main(["convert", "orbax-to-keras", str(tmp_path / "ckpt"), str(tmp_path / "x.h5")]) == 0
    assert "output layer 'embed'" in capsys.readouterr().out
    model = read_keras_h5(tmp_path / "x.h5")
    _assert_embeddings_close(_final_output(model.config, model.variables, ecgs), keras_out)


# ---- errors name the layer -------------------------------------------------------------------


def _random_variables(config: EncoderConfig, seed: int) -> dict:
    """Random float32 variables of the model's shapes (positive where variances live)."""
    shapes = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes
    )


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    write_keras_h5(path, TINY, _random_variables(TINY, 0))
    return path


def _with_graph(tiny_file, tmp_path, edit):
    """A copy of the tiny file whose model_config was changed by ``edit(layers_by_name)``."""
    path = tmp_path / "edited.h5"
    path.write_bytes(tiny_file.read_bytes())
    with h5py.File(path, "r+") as f:
        graph = json.loads(f.attrs["model_config"])
        edit({layer["name"]: layer for layer in graph["config"]["layers"]})
        f.attrs["model_config"] = json.dumps(graph).encode()
    return path


def test_lambda_layer_is_refused_by_name(tiny_file, tmp_path):
    def to_lambda(layers):
        layer = layers["activation_2"]
        layer["class_name"] = "Lambda"
        layer["config"] = {"name": "activation_2", "function": ["4wEAAAAA", None, None]}

    with pytest.raises(ValueError, match="'activation_2' is a Lambda"):
        read_keras_h5(_with_graph(tiny_file, tmp_path, to_lambda))


def test_unknown_layer_type_is_refused_by_name(tiny_file, tmp_path):
    def to_average_pool(layers):
        layers["max_pooling1d_1"]["class_name"] = "AveragePooling1D"

    with pytest.raises(ValueError, match="'max_pooling1d_1' \\(AveragePooling1D\\)"):
        read_keras_h5(_with_graph(tiny_file, tmp_path, to_average_pool))


def test_unsupported_option_is_refused_by_name(tiny_file, tmp_path):
    def causal(layers):
        layers["conv1d_3"]["config"]["padding"] = "causal"

    with pytest.raises(ValueError, match="'conv1d_3'.*padding='causal'"):
        read_keras_h5(_with_graph(tiny_file, tmp_path, causal))


def test_wrong_weight_shape_is_refused_by_name(tiny_file, tmp_path):
    path = tmp_path / "bad_shape.h5"
    path.write_bytes(tiny_file.read_bytes())
    with h5py.File(path, "r+") as f:
        group = f["model_weights/conv1d_3"]
        del group["conv1d_3/kernel:0"]
        group.create_dataset("conv1d_3/kernel:0", data=np.zeros((5, 16, 15), np.float32))
    with pytest.raises(ValueError, match="'conv1d_3' weight 'kernel' has shape \\(5, 16, 15\\)"):
        read_keras_h5(path)


def test_missing_weight_is_refused_by_name(tiny_file, tmp_path):
    path = tmp_path / "missing.h5"
    path.write_bytes(tiny_file.read_bytes())
    with h5py.File(path, "r+") as f:
        group = f["model_weights/batch_normalization_2"]
        names = read_str_list_attr(group, "weight_names")
        group.attrs["weight_names"] = np.array([n.encode() for n in names[:-1]])
    with pytest.raises(ValueError, match="'batch_normalization_2' has weights"):
        read_keras_h5(path)


def test_weights_only_file_is_refused(tiny_file, tmp_path):
    path = tmp_path / "weights_only.h5"
    path.write_bytes(tiny_file.read_bytes())
    with h5py.File(path, "r+") as f:
        del f.attrs["model_config"]
    with pytest.raises(ValueError, match="no model_config"):
        read_keras_h5(path)


def test_recorded_keras3_shape_mismatch_is_refused(keras_files):
    with h5py.File(keras_files["pclr_lead_ii"][0], "r") as f:
        graph = json.loads(f.attrs["model_config"])
    add = next(layer for layer in graph["config"]["layers"] if layer["name"] == "add")
    add["inbound_nodes"][0]["args"][0][0]["config"]["shape"] = [None, 1249, 128]
    with pytest.raises(ValueError, match="shape \\(1249, 128\\) for layer 'conv1d_3'"):
        trace_resnet(parse_model_config(graph))


def test_inconsistent_dropout_is_refused_by_name():
    graph, _ = model_config(ODD, with_head=True)
    dropout = next(layer for layer in graph["config"]["layers"] if layer["name"] == "dropout_3")
    dropout["config"]["rate"] = 0.5
    with pytest.raises(ValueError, match="'dropout_3' drops 0.5"):
        trace_resnet(parse_model_config(graph))


def test_non_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04 not an HDF5 file")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        read_keras_h5(path)


def test_orbax_checkpoint_needs_consistent_head(tmp_path):
    variables = _random_variables(TINY, 1)
    encoder_only = {
        "params": {"encoder": variables["params"]["encoder"]},
        "batch_stats": variables["batch_stats"],
    }
    with pytest.raises(ValueError, match="projection head"):
        save_encoder(tmp_path / "x", TINY, encoder_only)
    save_encoder(tmp_path / "y", TINY.replace(head_sizes=()), encoder_only)
    config, restored = restore_encoder(tmp_path / "y")
    assert config.head_sizes == () and "head" not in restored["params"]
    for saved, loaded in zip(
        jax.tree_util.tree_leaves(encoder_only), jax.tree_util.tree_leaves(restored), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(loaded), saved)
