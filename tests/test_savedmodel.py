"""Keras SavedModels read without TensorFlow: ml4h's three real releases (graph and index; their
data files are not stored), a small SavedModel written by tf-keras itself against Keras' own
outputs, corrupt files, one weights-form detector for every command.

Fixtures (``tests/data``): ``ml4h_pclr/`` holds ml4h's real ``saved_model.pb`` and
``variables/variables.index`` of ``PCLR/``, ``PCLR_lead_I/`` and ``PCLR_lead_II/`` with the git-LFS
pointers of their data files (sizes upstream); ``savedmodel/`` holds ``pclr_small/``, written by
tf-keras 2.21 (``savedmodel/make_fixture.py`` says how), with Keras' outputs and weights.
"""

import argparse
import builtins
import json
import marshal
import pathlib
import pickle
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from keras_reference import shared_graph

from pclr_jax import load_encoder
from pclr_jax.commands.cli import main
from pclr_jax.commands.probe import _embed_with_weights
from pclr_jax.signals.preprocess import prepare_ecg
from pclr_jax.signals.records import read_wfdb
from pclr_jax.weights import encoder_checkpoint, tf_protos
from pclr_jax.weights.crc32c import crc32c, mask, masked_crc32c
from pclr_jax.weights.encoder_checkpoint import save_encoder
from pclr_jax.weights.forms import detect_weights_form, read_weights
from pclr_jax.weights.keras_graph import decode_tuples, parse_model_config, trace_resnet
from pclr_jax.weights.keras_h5 import read_keras_h5
from pclr_jax.weights.keras_weights import WEIGHT_MAP, expected_shapes, module_shapes
from pclr_jax.weights.savedmodel import plan_savedmodel, read_savedmodel
from pclr_jax.weights.savedmodel_graph import KERAS_METADATA, read_savedmodel_graph
from pclr_jax.weights.sstable import FOOTER_SIZE, TableError, read_table
from pclr_jax.weights.tensor_bundle import OBJECT_GRAPH_KEY, BundleError, read_index

TEST_DATA = pathlib.Path(__file__).parent / "data"
RELEASES = TEST_DATA / "ml4h_pclr"
FIXTURE = TEST_DATA / "savedmodel" / "pclr_small"
KERAS_OUTPUTS = TEST_DATA / "savedmodel" / "keras_outputs.npz"
DATA_FILE = "variables/variables.data-00000-of-00001"
# Release -> (its graph in tests/data/keras, the data file's size upstream, also in its LFS
# pointer and ../shared/released/README.md).
RELEASED = {
    "PCLR": ("pclr", 25_600_481),
    "PCLR_lead_I": ("pclr_lead_i", 25_555_425),
    "PCLR_lead_II": ("pclr_lead_ii", 25_553_411),
}
FLOAT32 = 1  # TensorFlow's DataType number


def _relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# ---- ml4h's real releases: graph and index ---------------------------------------------------


@pytest.mark.parametrize("release", sorted(RELEASED))
def test_real_index_maps_every_entry_to_a_weight_of_the_graph(release):
    directory = RELEASES / release
    graph_name, data_size = RELEASED[release]
    layout = plan_savedmodel(directory, follow_object_graph=False)  # the data file is not here

    # The graph in saved_model.pb (SavedUserObject metadata, tf.keras 2.4) is the released one.
    reference = trace_resnet(parse_model_config(shared_graph(graph_name)))
    assert layout.traced.config == reference.config
    assert layout.traced.modules == reference.modules

    # Every weight of the graph has an entry of the graph's shape, in float32 ...
    expected = expected_shapes(layout.config)
    wanted = {}
    for path, (layer, kind) in layout.traced.modules.items():
        for weight, shape in module_shapes(expected, path, kind).items():
            wanted[(layer, weight)] = shape
    found = {(w.layer, w.weight): w.entry for w in layout.weights}
    assert found.keys() == wanted.keys()
    for name, entry in found.items():
        assert (entry.shape, entry.dtype) == (wanted[name], FLOAT32), name
    # ... and every entry of the index is a weight of the graph (or the object graph).
    index = read_index(directory / "variables" / "variables")
    assert set(index.entries) == {e.key for e in found.values()} | {OBJECT_GRAPH_KEY}
    assert layout.training_state == ()

    # The entries tile the upstream data file exactly: no gap, no overlap, nothing after.
    pointer = (directory / (DATA_FILE + ".lfs-pointer")).read_text()
    assert f"size {data_size}\n" in pointer
    end = 0
    for entry in sorted(index.entries.values(), key=lambda e: e.offset):
        assert entry.offset == end, entry.key
        end += entry.size
    assert end == data_size
    n_weights = sum(int(np.prod(shape)) for shape in wanted.values())
    assert sum(e.size for e in found.values()) == 4 * n_weights


def test_real_graph_equals_the_released_json():
    for release, (graph_name, _) in RELEASED.items():
        saved = read_savedmodel_graph(RELEASES / release)
        config = decode_tuples(saved.model_config["config"])
        assert config == shared_graph(graph_name)["config"], release


def test_real_index_blocks_are_checked():
    index = (RELEASES / "PCLR" / "variables" / "variables.index").read_bytes()
    keys = [key for key, _ in read_table(index)]
    assert keys == sorted(keys) and len(keys) == 51 and keys[0] == b""
    corrupt = bytearray(index)
    corrupt[100] ^= 0x01  # inside the first data block
    with pytest.raises(TableError, match="data block at bytes 0-3197 fails its CRC32C check"):
        list(read_table(bytes(corrupt), "variables.index"))
    with pytest.raises(TableError, match="magic number"):
        list(read_table(index[:-1]))


def test_snappy_compressed_block_is_refused():
    index = bytearray((RELEASES / "PCLR_lead_II" / "variables" / "variables.index").read_bytes())
    # The index block's handle is the footer's second varint pair; mark that block as Snappy and
    # give it a valid checksum, so that the refusal and not the checksum speaks.
    footer = index[-FOOTER_SIZE:]
    values, pos = [], 0
    while len(values) < 4:
        value = shift = 0
        while True:
            byte = footer[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(value)
    offset, size = values[2], values[3]
    index[offset + size] = 1
    checksum = masked_crc32c(bytes(index[offset : offset + size + 1]))
    index[offset + size + 1 : offset + size + 5] = checksum.to_bytes(4, "little")
    with pytest.raises(TableError, match="index block is snappy-compressed"):
        list(read_table(bytes(index), "variables.index"))


def test_crc32c_known_values():
    # RFC 3720 (iSCSI) B.4 and the common check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    # TensorFlow's mask: rotate right by 15 bits, add 0xa282ead8.
    assert mask(0) == 0xA282EAD8
    assert mask(0x00008000) == 0xA282EAD9
    assert mask(0xFFFFFFFF) == (0xFFFFFFFF + 0xA282EAD8) & 0xFFFFFFFF


# ---- a SavedModel written by tf-keras: values ------------------------------------------------


@pytest.fixture(scope="module")
def keras_outputs():
    return dict(np.load(KERAS_OUTPUTS))


def test_tf_written_weights_are_read_exactly(keras_outputs):
    layout = plan_savedmodel(FIXTURE)
    model = read_savedmodel(FIXTURE)
    assert model.output_layer == "projection" and model.input_name == "ecg"
    assert model.default_output is None
    n_checked = 0
    for path, (layer, kind) in layout.traced.modules.items():
        for keras_name, (collection, flax_name) in WEIGHT_MAP[kind].items():
            node = model.variables[collection]
            for key in path:
                node = node[key]
            np.testing.assert_array_equal(
                node[flax_name], keras_outputs[f"weight/{layer}/{keras_name}"]
            )
            n_checked += 1
    assert n_checked == sum(1 for k in keras_outputs if k.startswith("weight/"))
    # A compiled, fitted model also saves optimizer slots and metric totals: skipped.
    assert layout.training_state
    assert {key.split("/")[0] for key in layout.training_state} == {"optimizer", "keras_api"}


def test_tf_written_savedmodel_embeds_as_keras(keras_outputs):
    ecgs = keras_outputs["ecgs"]
    final = load_encoder(FIXTURE, batch_size=4)  # third-party Keras: its own output by default
    assert final.output == "final" and final.embed_dim == 8
    assert _relative_difference(final.embed(ecgs), keras_outputs["final"]) < 1e-5
    embed = load_encoder(FIXTURE, output="embed", batch_size=4)
    assert _relative_difference(embed.embed(ecgs), keras_outputs["embed"]) < 1e-5


def test_checkpoint_keys_follow_the_object_graph():
    """The keys found through the checkpoint's object graph are TensorFlow's default names,
    which is what the index-only check of the real releases relies on."""
    followed = plan_savedmodel(FIXTURE)
    named = plan_savedmodel(FIXTURE, follow_object_graph=False)
    assert followed.weights == named.weights
    assert followed.weights[0].entry.key == "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def test_reading_executes_nothing(monkeypatch):
    """No pickle, marshal, eval or exec on the way, and no TensorFlow."""

    def refuse(*args, **kwargs):
        raise AssertionError("the reader tried to execute or unpickle something")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (marshal, "loads"),
        (builtins, "eval"),
        (builtins, "exec"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    read_savedmodel(FIXTURE)
    for release in RELEASED:
        plan_savedmodel(RELEASES / release, follow_object_graph=False)
    assert "tensorflow" not in sys.modules


# ---- corrupt files and refusals --------------------------------------------------------------


@pytest.fixture
def fixture_copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(FIXTURE, target)
    return target


def test_flipped_byte_names_the_variable(fixture_copy):
    entry = read_index(fixture_copy / "variables" / "variables").entries[
        "layer_with_weights-2/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    ]
    data = bytearray((fixture_copy / DATA_FILE).read_bytes())
    data[entry.offset + 7] ^= 0x10
    (fixture_copy / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(
        BundleError,
        match=r"layer 'conv1d_1' weight 'kernel': 'layer_with_weights-2/kernel/.ATTRIBUTES/"
        r"VARIABLE_VALUE' fails its CRC32C check",
    ):
        read_savedmodel(fixture_copy)


def test_corrupt_object_graph_is_caught(fixture_copy):
    entry = read_index(fixture_copy / "variables" / "variables").entries[OBJECT_GRAPH_KEY]
    data = bytearray((fixture_copy / DATA_FILE).read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x01
    (fixture_copy / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"'{OBJECT_GRAPH_KEY}' fails its CRC32C check"):
        read_savedmodel(fixture_copy)


def test_truncated_data_file_is_refused(fixture_copy):
    data = (fixture_copy / DATA_FILE).read_bytes()
    (fixture_copy / DATA_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated file"):
        read_savedmodel(fixture_copy)


def test_missing_files_are_named(fixture_copy):
    (fixture_copy / DATA_FILE).unlink()
    with pytest.raises(BundleError, match="data file .* is missing"):
        read_savedmodel(fixture_copy)
    (fixture_copy / "variables" / "variables.index").unlink()
    with pytest.raises(BundleError, match="checkpoint index .* is missing"):
        read_savedmodel(fixture_copy)
    (fixture_copy / "saved_model.pb").unlink()
    with pytest.raises(ValueError, match="no saved_model.pb"):
        read_savedmodel_graph(fixture_copy)


def _edit_model_config(directory: pathlib.Path, edit) -> None:
    """Rewrites the model config in ``keras_metadata.pb`` with ``edit(layers)``."""
    path = directory / KERAS_METADATA
    metadata = tf_protos.KerasSavedMetadata.FromString(path.read_bytes())
    root = next(node for node in metadata.nodes if node.node_id == 0)
    info = json.loads(root.metadata)
    edit(info["model_config"]["config"]["layers"])
    root.metadata = json.dumps(info)
    path.write_bytes(metadata.SerializeToString())


def _layer(layers, name):
    return next(layer for layer in layers if layer["config"]["name"] == name)


def test_lambda_layer_is_refused_by_name(fixture_copy):
    def to_lambda(layers):
        layer = _layer(layers, "activation_1")
        layer["class_name"] = "Lambda"
        layer["config"] = {"name": "activation_1", "function": ["4wEAAAAA", None, None]}

    _edit_model_config(fixture_copy, to_lambda)
    with pytest.raises(ValueError, match="layer 'activation_1' is a Lambda"):
        read_savedmodel(fixture_copy)


def test_unknown_layer_is_refused_by_name(fixture_copy):
    def to_average_pool(layers):
        _layer(layers, "max_pooling1d_1")["class_name"] = "AveragePooling1D"

    _edit_model_config(fixture_copy, to_average_pool)
    with pytest.raises(ValueError, match="'max_pooling1d_1' \\(AveragePooling1D\\)"):
        read_savedmodel(fixture_copy)


def test_shape_mismatch_is_refused_by_name(fixture_copy):
    def wider_head(layers):
        _layer(layers, "projection")["config"]["units"] = 9

    _edit_model_config(fixture_copy, wider_head)
    with pytest.raises(
        ValueError,
        match=r"layer 'projection' weight 'kernel' .* shape \(16, 8\); the graph implies \(16, 9\)",
    ):
        plan_savedmodel(fixture_copy)


# ---- one detector for every command ----------------------------------------------------------


def test_detect_weights_form(fixture_copy, tmp_path):
    h5 = tmp_path / "model.h5"
    model = read_savedmodel(fixture_copy)
    assert main(["convert", "keras-to-orbax", str(fixture_copy), str(tmp_path / "orbax")]) == 0
    assert main(["convert", "orbax-to-keras", str(tmp_path / "orbax"), str(h5)]) == 0
    assert detect_weights_form(fixture_copy) == "savedmodel"
    assert detect_weights_form(tmp_path / "orbax") == "orbax"
    assert detect_weights_form(h5) == "keras_h5"
    with pytest.raises(FileNotFoundError):
        detect_weights_form(tmp_path / "absent")
    with pytest.raises(ValueError, match="give its directory"):
        detect_weights_form(fixture_copy / "saved_model.pb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a SavedModel"):
        detect_weights_form(tmp_path / "empty")
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 a zip archive")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        detect_weights_form(tmp_path / "model.keras")
    # The same weights whichever the form.
    for path in (tmp_path / "orbax", h5):
        weights = read_weights(path)
        assert weights.config == model.config
        np.testing.assert_array_equal(
            weights.variables["params"]["head"]["dense_1"]["kernel"],
            model.variables["params"]["head"]["dense_1"]["kernel"],
        )
    assert read_keras_h5(h5).config == model.config


def test_orbax_metadata_is_read_once(tmp_path, monkeypatch):
    model = read_savedmodel(FIXTURE)
    save_encoder(tmp_path / "orbax", model.config, model.variables)
    calls = []
    original = encoder_checkpoint.read_metadata

    def counted(directory):
        calls.append(directory)
        return original(directory)

    monkeypatch.setattr(encoder_checkpoint, "read_metadata", counted)
    assert load_encoder(tmp_path / "orbax").output == "embed"
    assert len(calls) == 1


def test_cli_savedmodel_to_orbax_and_embed(keras_outputs, tmp_path, capsys, test_data_dir):
    out = tmp_path / "orbax"
    assert main(["convert", "savedmodel-to-orbax", str(FIXTURE), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(savedmodel)" in printed and "output layer 'projection'" in printed
    assert (
        "256 samples x 12 leads" in printed and "default output for pclr embed: 'final'" in printed
    )
    info = encoder_checkpoint.read_metadata(out)
    assert info["source_form"] == "savedmodel" and info["keras_output_layer"] == "projection"
    converted = load_encoder(out, batch_size=4)
    assert converted.output == "final"
    assert _relative_difference(converted.embed(keras_outputs["ecgs"]), keras_outputs["final"]) < (
        1e-5
    )
    h5 = tmp_path / "model.h5"
    assert main(["convert", "orbax-to-keras", str(out), str(h5)]) == 0
    with pytest.raises(SystemExit, match="reads savedmodel"):
        main(["convert", "savedmodel-to-orbax", str(h5), str(tmp_path / "again")])

    # pclr probe --weights DIR embeds with the same loader.
    sources = {}
    args = argparse.Namespace(weights=[("", str(FIXTURE))], output_layer=None, embed_batch_size=4)
    _embed_with_weights(args, keras_outputs["ecgs"], sources)
    assert _relative_difference(sources["pclr"], keras_outputs["final"]) < 1e-5

    # pclr embed --weights DIR on real records.
    record = "ptbxl/records500/00000/00055_hr"
    table = tmp_path / "embeddings.csv"
    argv = ["embed", "--weights", str(FIXTURE), "--input", str(test_data_dir / (record + ".hea"))]
    assert main([*argv, "--output", str(table), "--batch-size", "4"]) == 0
    assert "output 'final'" in capsys.readouterr().err
    row = pd.read_csv(table).set_index("sample_id").iloc[0].to_numpy()
    ecg = prepare_ecg(read_wfdb(test_data_dir / record), 256)
    expected = load_encoder(FIXTURE).embed(ecg[None])[0]
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
