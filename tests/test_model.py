"""The Flax encoder (pclr_jax/model/encoder.py) against Keras 3 as an independent reference."""

import flax.linen as nn
import jax
import keras
import numpy as np
import pytest
from keras_reference import (
    ODD,
    TINY,
    build_keras_encoder,
    flax_variables,
    randomize,
    shared_graph,
)

from pclr_jax.model.encoder import EncoderConfig, PCLRModel, count_parameters, init_variables


def _close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "length,kernel,stride",
    [(4096, 16, 1), (4096, 16, 4), (2500, 16, 2), (1250, 16, 4), (313, 16, 4), (79, 16, 4),
     (20, 5, 3), (17, 7, 4)],
)  # fmt: skip
def test_same_padded_conv_matches_keras(length, kernel, stride):
    """Flax 'SAME' = Keras 'same' for even kernels (7 left / 8 right) and strides."""
    rng = np.random.default_rng(length + kernel + stride)
    x = rng.normal(size=(2, length, 3)).astype(np.float32)
    layer = keras.layers.Conv1D(4, kernel, strides=stride, padding="same", use_bias=False)
    expected = np.asarray(layer(x))
    flax_conv = nn.Conv(4, (kernel,), strides=(stride,), padding="SAME", use_bias=False)
    actual = flax_conv.apply({"params": {"kernel": layer.kernel.numpy()}}, x)
    assert actual.shape == expected.shape == (2, -(-length // stride), 4)
    _close(np.asarray(actual), expected)


@pytest.mark.parametrize("length,pool", [(4096, 4), (2500, 2), (1250, 4), (313, 4), (79, 4)])
def test_same_padded_max_pool_matches_keras(length, pool):
    """The last, partial window of a 'same' max pool ignores the padding (all-negative input)."""
    x = -np.random.default_rng(length).uniform(1.0, 2.0, size=(2, length, 3)).astype(np.float32)
    expected = np.asarray(keras.layers.MaxPooling1D(pool, strides=pool, padding="same")(x))
    actual = np.asarray(nn.max_pool(x, (pool,), strides=(pool,), padding="SAME"))
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def _parameters(config: EncoderConfig) -> int:
    return count_parameters(jax.eval_shape(lambda: init_variables(config, jax.random.key(0))))


def test_released_parameter_counts():
    """The release's counts (Keras' count_params of the shared graphs: test_keras_conversion)."""
    assert _parameters(EncoderConfig(head_sizes=())) == 6_394_912
    assert _parameters(EncoderConfig()) == 6_600_352


def test_lead_ii_strides_match_released_graph():
    """ml4h's samples_in // samples_out gives strides 2, 4, 4, 4 for 2,500 samples."""
    layers = shared_graph("pclr_lead_ii")["config"]["layers"]
    strides = [layer["config"]["strides"][0] for layer in layers if layer["class_name"] == "Conv1D"]
    assert [s for s in strides if s > 1] == [2, 4, 4, 4]
    assert EncoderConfig(n_samples=2500).downsample == (2, 4, 4, 4)


@pytest.mark.parametrize("config", [TINY, ODD], ids=["tiny", "odd"])
def test_encoder_and_head_match_keras(config):
    keras_model, modules = build_keras_encoder(config, with_head=True)
    randomize(keras_model, seed=3)
    x = np.random.default_rng(4).normal(size=(3, config.n_samples, config.n_leads))
    x = x.astype(np.float32)
    keras_embed, keras_projection = (np.asarray(y) for y in keras_model(x, training=False))
    variables = flax_variables(modules)
    assert count_parameters(variables) == keras_model.count_params()
    embed, projection = PCLRModel(config).apply(variables, x)
    assert embed.shape == (3, config.embed_dim)
    assert projection.shape == (3, config.head_sizes[-1])
    _close(np.asarray(embed), keras_embed)
    _close(np.asarray(projection), keras_projection)
