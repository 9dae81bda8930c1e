"""How ``tests/data/savedmodel/`` was made: a small PCLR encoder saved by TensorFlow itself.

Two steps, each in its own environment (from the repository root):

1. ``python tests/data/savedmodel/make_fixture.py config`` with pclr-jax installed writes
   ``model_config.json``: the Keras graph of :data:`CONFIG` as
   :func:`pclr_jax.weights.keras_export.model_config` generates it (tf.keras 2.4 layer names and
   options, as in ml4h's files).
2. ``python tests/data/savedmodel/make_fixture.py savedmodel`` in a virtual environment with the
   ``peers-tf`` extra (``pip install "tensorflow>=2.21,<2.22" "tf-keras>=2.21,<2.22"``): tf-keras
   builds the model from that JSON, compiles it with Adam and fits one step (so that the
   checkpoint also holds optimizer slots and metric totals, as a trained model's does), then sets
   known random weights and non-trivial batch-norm statistics (seed 0), writes the SavedModel
   with ``model.save(DIR, save_format="tf")`` to ``pclr_small/`` and stores in
   ``keras_outputs.npz``: ``ecgs`` (4, 256 samples, 12 leads), Keras' ``final`` output (the
   projection head, 8-d) and ``embed`` output (the pooled layer, 16-d) of ``model(ecgs,
   training=False)``, and every weight as ``weight/<layer>/<name>``.

The SavedModel is written by TensorFlow; pclr-jax writes none of its files.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SAVEDMODEL = HERE / "pclr_small"
MODEL_CONFIG = HERE / "model_config.json"
OUTPUTS = HERE / "keras_outputs.npz"
# 256 -> 64 -> 16 -> 4 samples; an identity skip (unit 0) and 1x1 skip convs; an even kernel, as
# the released models' 16 (Keras pads 'same' asymmetrically); dropout layers; a projection head.
CONFIG = dict(
    n_leads=12,
    n_samples=256,
    stem_filters=8,
    unit_samples=(64, 16, 4),
    unit_filters=(8, 12, 16),
    kernel_size=6,
    dropout=0.1,
    head_sizes=(16, 8),
)


def write_config() -> None:
    from pclr_jax.model.encoder import EncoderConfig
    from pclr_jax.weights.keras_export import model_config

    graph, _ = model_config(EncoderConfig(**CONFIG), with_head=True)
    MODEL_CONFIG.write_text(json.dumps(graph, indent=1) + "\n")


def _known_weights(model, rng) -> None:
    """Random weights at a scale that keeps activations O(1), and batch-norm statistics far from
    their initial (0, 1)."""
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            name = weight.name.split("/")[-1].split(":")[0]
            shape = tuple(weight.shape)
            if name == "kernel":
                fan_in = int(np.prod(shape[:-1]))  # (kernel, in, out) or (in, out)
                values.append(rng.normal(0, (2.0 / fan_in) ** 0.5, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name == "beta":  # positive on average: few channels dead after the ReLU
                values.append(rng.normal(0.3, 0.1, shape))
            elif name == "bias":
                values.append(rng.normal(0, 0.1, shape))
            elif name == "moving_mean":
                values.append(rng.normal(0, 0.3, shape))
            elif name == "moving_variance":
                values.append(rng.uniform(0.5, 2.0, shape))
            else:
                raise ValueError(f"unexpected weight {weight.name}")
        if values:
            layer.set_weights([v.astype("float32") for v in values])


def write_savedmodel() -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras

    rng = np.random.default_rng(0)
    model = tf_keras.models.model_from_json(MODEL_CONFIG.read_text())
    model.compile(optimizer="adam", loss="mse")
    n_samples, n_leads = CONFIG["n_samples"], CONFIG["n_leads"]
    x = rng.normal(0, 1, (4, n_samples, n_leads)).astype("float32")
    y = rng.normal(0, 1, (4, CONFIG["head_sizes"][-1])).astype("float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    _known_weights(model, rng)
    t = np.arange(n_samples) / n_samples * 10.0
    beat = np.sin(2 * np.pi * 1.2 * t)[None, :, None] * rng.uniform(0.2, 1.0, (4, 1, n_leads))
    ecgs = (beat + rng.normal(0, 0.1, (4, n_samples, n_leads))).astype("float32")
    embed_model = tf_keras.Model(model.inputs, model.get_layer("embed").output)
    outputs = {
        "ecgs": ecgs,
        "final": model(ecgs, training=False).numpy(),
        "embed": embed_model(ecgs, training=False).numpy(),
    }
    for layer in model.layers:
        for weight in layer.weights:
            short = weight.name.split("/")[-1].split(":")[0]
            outputs[f"weight/{layer.name}/{short}"] = weight.numpy()
    model.save(str(SAVEDMODEL), save_format="tf")
    np.savez(OUTPUTS, **outputs)


if __name__ == "__main__":
    steps = {"config": write_config, "savedmodel": write_savedmodel}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        raise SystemExit(f"usage: python {sys.argv[0]} {'|'.join(steps)}")
    steps[sys.argv[1]]()
