"""Keras 3 reference models for tests (needs ``KERAS_BACKEND=jax``, which conftest sets).

* :func:`shared_graph` / :func:`build_shared` rebuild the released PCLR layer graphs
  (``tests/data/keras/*.json``, saved by tf.keras 2.4) with Keras;
* :func:`build_keras_encoder` is an independent Keras implementation of the architecture from an
  :class:`~pclr_jax.model.encoder.EncoderConfig`, written with the Keras functional API after ml4h's
  ``ResidualUnit``, that also reports which Keras layer plays which Flax module;
* :func:`randomize` gives any such model random weights and non-trivial batch-norm statistics;
* ``TINY`` and ``ODD`` are small encoder configurations for fast tests.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np

from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.weights.keras_graph import decode_tuples

GRAPHS = pathlib.Path(__file__).parent / "data" / "keras"
SHARED_NAMES = ("pclr", "pclr_lead_i", "pclr_lead_ii", "pclr_with_head")
# Small configurations for fast tests: TINY has the released structure at a small size.
TINY = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(32, 32),
)
# Odd lengths, a stride-1 unit (no max pool) at the stem's width (no skip conv), swish, dropout,
# no stem batch norm, an odd kernel: 250 -> 250 -> 84 -> 17 -> 5 samples.
ODD = EncoderConfig(
    n_leads=2,
    n_samples=250,
    unit_samples=(250, 64, 16, 4),
    unit_filters=(8, 16, 16, 24),
    stem_filters=8,
    kernel_size=7,
    activation="swish",
    dropout=0.2,
    stem_batch_norm=False,
    head_sizes=(16, 8, 8),
    bn_epsilon=1e-5,
    bn_momentum=0.9,
)
# Builds skip Keras' random initialisers (one compilation per weight shape); randomize() follows.
ZERO_INIT = {"kernel_initializer": "zeros"}


def shared_graph(name: str) -> dict:
    """A released graph as a functional-model dict (``class_name``, ``config``), tuples as lists.

    The 12-lead files hold the model at the top level; the lead-I/II files (SavedModel metadata)
    hold the layer graph under ``model_config``.
    """
    data = json.loads((GRAPHS / f"{name}_keras_model_config.json").read_text())
    if "layers" not in data["config"]:
        data = data["model_config"]
    return decode_tuples({"class_name": data["class_name"], "config": data["config"]})


def build_shared(name: str) -> keras.Model:
    """The released graph in Keras, its kernels initialised to zeros (see :func:`randomize`).

    Keras compiles a random initialiser for every weight shape, which dominates build time.
    """
    config = shared_graph(name)["config"]
    for layer in config["layers"]:
        if "kernel_initializer" in layer["config"]:
            layer["config"]["kernel_initializer"] = {"class_name": "Zeros", "config": {}}
    return keras.Model.from_config(config)


def randomize(model: keras.Model, seed: int) -> None:
    """He-scaled random kernels, random biases, BN gamma/beta and moving mean/variance."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            short = weight.path.split("/")[-1]
            if short == "kernel":
                fan_in = int(np.prod(shape[:-1]))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif short == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif short == "moving_variance":
                value = rng.uniform(0.3, 2.0, shape)
            elif short == "moving_mean":
                value = rng.normal(0.0, 0.3, shape)
            elif short in ("beta", "bias"):
                value = rng.normal(0.0, 0.1, shape)
            else:
                raise AssertionError(f"unexpected weight {weight.path}")
            values.append(value.astype(np.float32))
        if values:
            layer.set_weights(values)


def build_keras_encoder(config: EncoderConfig, with_head: bool) -> tuple[keras.Model, dict]:
    """An independent Keras implementation of the PCLR encoder (and head).

    Returns the model (outputs ``[embed, projection]`` with a head, else ``embed``) and a dict
    mapping Flax module paths such as ``('encoder', 'unit_0', 'conv_1')`` to Keras layers.
    """
    layers = keras.layers
    modules: dict[tuple[str, ...], keras.layers.Layer] = {}

    def conv(x, filters, kernel, stride, path):
        layer = layers.Conv1D(
            filters, kernel, strides=stride, padding="same", use_bias=False, **ZERO_INIT
        )
        modules[path] = layer
        return layer(x)

    def batch_norm(x, path):
        layer = layers.BatchNormalization(momentum=config.bn_momentum, epsilon=config.bn_epsilon)
        modules[path] = layer
        return layer(x)

    def act_dropout(x):
        x = layers.Activation(config.activation)(x)
        return layers.Dropout(config.dropout)(x) if config.dropout > 0 else x

    ecg = keras.Input((config.n_samples, config.n_leads), name="ecg")
    x = conv(ecg, config.stem_filters, config.kernel_size, 1, ("encoder", "stem_conv"))
    if config.stem_batch_norm:
        x = batch_norm(x, ("encoder", "stem_bn"))
    x = skip = layers.Activation(config.activation)(x)
    for i, (samples_out, filters) in enumerate(
        zip(config.unit_samples, config.unit_filters, strict=True)
    ):
        path = ("encoder", f"unit_{i}")
        downsample = x.shape[1] // samples_out  # ml4h: n_samples_in // n_samples_out
        if downsample > 1:
            skip = layers.MaxPooling1D(downsample, strides=downsample, padding="same")(skip)
        if skip.shape[-1] != filters:
            skip = conv(skip, filters, 1, 1, (*path, "skip_conv"))
        x = conv(x, filters, config.kernel_size, 1, (*path, "conv_0"))
        x = act_dropout(batch_norm(x, (*path, "bn_0")))
        x = conv(x, filters, config.kernel_size, downsample, (*path, "conv_1"))
        x = skip = layers.Add()([x, skip])
        x = act_dropout(batch_norm(x, (*path, "bn_out")))
    embed = layers.GlobalAveragePooling1D(name="embed")(x)
    if not with_head:
        return keras.Model(ecg, embed), modules
    y = embed
    for i, units in enumerate(config.head_sizes):
        last = i == len(config.head_sizes) - 1
        layer = layers.Dense(units, activation=None if last else "relu", **ZERO_INIT)
        modules[("head", f"dense_{i}")] = layer
        y = layer(y)
    return keras.Model(ecg, [embed, y]), modules


def flax_variables(modules: dict) -> dict:
    """PCLRModel variables holding the weights of the Keras layers in ``modules``."""
    variables: dict = {"params": {}, "batch_stats": {}}

    def put(collection, path, name, value):
        node = variables[collection]
        for key in path:
            node = node.setdefault(key, {})
        node[name] = np.asarray(value)

    for path, layer in modules.items():
        weights = {w.path.split("/")[-1]: w.numpy() for w in layer.weights}
        if isinstance(layer, keras.layers.BatchNormalization):
            put("params", path, "scale", weights["gamma"])
            put("params", path, "bias", weights["beta"])
            put("batch_stats", path, "mean", weights["moving_mean"])
            put("batch_stats", path, "var", weights["moving_variance"])
        else:
            for name, value in weights.items():
                put("params", path, name, value)
    return variables
