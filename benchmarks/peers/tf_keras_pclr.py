"""TensorFlow/Keras peer of ``pclr bench``: the PCLR model as ml4h built it, trained with NT-Xent.

The network of ``--arch`` (the JSON of ``pclr_jax.benchmarking.workloads.arch_spec``) as a Keras
functional model with the layers of the released graphs: ``Conv1D(padding='same',
use_bias=False)``, ``BatchNormalization(epsilon=1e-3, momentum=0.99)``, ``MaxPooling1D(stride,
padding='same')`` plus a 1x1 ``Conv1D`` on the skip path where the width changes,
``GlobalAveragePooling1D`` and a Dense head. TensorFlow runs it with oneDNN and WITHOUT XLA
(``tf.function(jit_compile=False)``), as ml4h trained PCLR.

Keras version: tf.keras 2 (the ``tf-keras`` package, selected with ``TF_USE_LEGACY_KERAS=1``,
which this script sets) when installed, else Keras 3 on the TensorFlow backend; the result's
``framework`` says which.

* ``train``: both views in ONE forward pass (``2B`` ECGs), NT-Xent t=0.1 (sum of the two views'
  mean cross-entropies, self-similarity masked with -1e9 as ml4h), Adam (lr 1e-3, eps 1e-7),
  gradients clipped at global norm 1, in a ``tf.function``.
* ``embed``: ``model.predict(x, batch_size=N)`` of the headless encoder, what ml4h's
  ``get_representations`` calls.
* ``loss``: NT-Xent value and gradient on random projections.

``--dtype bf16``: the ``mixed_bfloat16`` policy. ``--device gpu`` (what ``pclr bench`` passes
when pclr-jax runs on a GPU) needs a TensorFlow that sees a GPU, else the peer exits with the
protocol's device code rather than run on the CPU; ``--device cpu`` hides the GPUs.
``--check FILE.npz`` loads pclr-jax weights and compares outputs.
Install: ``pip install "tensorflow==2.21.*" "tf-keras==2.21.*"``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_protocol import protocol  # noqa: E402 (this directory, see its docstring)

try:
    import numpy as np
    import tensorflow as tf
except ImportError as error:  # reported by pclr bench as "peer unavailable"
    print(
        f"tf_keras peer: cannot import {error.name!r} with {sys.executable}; install TensorFlow: "
        'pip install "tensorflow==2.21.*" "tf-keras==2.21.*" numpy, or pip install '
        "'pclr-jax[peers-tf]'",
        file=sys.stderr,
    )
    sys.exit(protocol.MISSING_EXIT_CODE)

keras = tf.keras
if keras.__name__.startswith("tf_keras"):
    import tf_keras

    KERAS_NAME = f"tf.keras {tf_keras.__version__} (tf-keras)"
else:
    KERAS_NAME = f"Keras {keras.version()} (TensorFlow backend)"


def select_device(device: str | None) -> str:
    """Makes TensorFlow run on pclr bench's ``--device`` (default cpu): ``'cpu'`` or ``'gpu'``;
    refuses a device TensorFlow cannot use."""
    gpus = tf.config.list_physical_devices("GPU")
    if device in (None, "cpu"):
        tf.config.set_visible_devices([], "GPU")
        return "cpu"
    if device == "gpu" and gpus:
        tf.config.set_visible_devices(gpus[:1], "GPU")
        return "gpu"
    protocol.refuse(
        protocol.DEVICE_EXIT_CODE,
        f"tf_keras peer: pclr-jax runs on {device!r} but TensorFlow {tf.__version__} with "
        f"{sys.executable} sees no such device (GPUs: {len(gpus)}); refusing to compare with a "
        'CPU run. For NVIDIA GPUs: pip install "tensorflow[and-cuda]==2.21.*", and name it with '
        "--peer-python.",
    )


def device_peak_mib() -> float | None:
    """Peak memory TensorFlow allocated on the first visible GPU, MiB (None without one)."""
    if not tf.config.get_visible_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def build_model(arch: dict, with_head: bool = True) -> keras.Model:
    """ECGs ``(batch, samples, leads)`` -> ``[embed, projection]`` (or ``embed`` alone)."""
    layers = keras.layers
    k = arch["kernel_size"]

    def bn(name):
        return layers.BatchNormalization(
            epsilon=arch["bn_epsilon"], momentum=arch["bn_momentum"], name=name
        )

    def conv(filters, kernel, stride, name):
        return layers.Conv1D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=name
        )

    ecg = keras.Input((arch["n_samples"], arch["n_leads"]), name="ecg")
    x = conv(arch["stem_filters"], k, 1, "stem_conv")(ecg)
    x = layers.Activation("relu")(bn("stem_bn")(x))
    skip, width = x, arch["stem_filters"]
    units = zip(arch["unit_filters"], arch["downsample"], strict=True)
    for i, (filters, stride) in enumerate(units):
        if stride > 1:
            skip = layers.MaxPooling1D(stride, strides=stride, padding="same")(skip)
        if width != filters:
            skip = conv(filters, 1, 1, f"unit_{i}_skip_conv")(skip)
        x = conv(filters, k, 1, f"unit_{i}_conv_0")(x)
        x = layers.Activation("relu")(bn(f"unit_{i}_bn_0")(x))
        x = conv(filters, k, stride, f"unit_{i}_conv_1")(x)
        skip = layers.Add()([x, skip])
        x = layers.Activation("relu")(bn(f"unit_{i}_bn_out")(skip))
        width = filters
    embed = layers.GlobalAveragePooling1D(name="embed", dtype="float32")(x)
    if not with_head:
        return keras.Model(ecg, embed)
    z = embed
    sizes = arch["head_sizes"]
    for i, size in enumerate(sizes):
        z = layers.Dense(size, activation="relu" if i < len(sizes) - 1 else None)(z)
    z = layers.Activation("linear", dtype="float32", name="projection")(z)
    return keras.Model(ecg, [embed, z])


def ntxent(z_a, z_b, temperature: float = 0.1):
    """ml4h's ``simclr_loss``: mean CE over [ab, aa] plus mean CE over [ba, bb]."""
    a = tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1)
    b = tf.math.l2_normalize(tf.cast(z_b, tf.float32), axis=1)
    n = tf.shape(a)[0]
    mask = tf.one_hot(tf.range(n), n) * 1e9
    aa = tf.matmul(a, a, transpose_b=True) / temperature - mask
    bb = tf.matmul(b, b, transpose_b=True) / temperature - mask
    ab = tf.matmul(a, b, transpose_b=True) / temperature
    ba = tf.matmul(b, a, transpose_b=True) / temperature
    labels = tf.range(n)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    return tf.reduce_mean(ce(labels, tf.concat([ab, aa], 1))) + tf.reduce_mean(
        ce(labels, tf.concat([ba, bb], 1))
    )


def load_flax_variables(model: keras.Model, flat: dict) -> None:
    """Copies pclr-jax variables (``'params/encoder/unit_0/conv_0/kernel'`` -> array) in."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            prefix = _flax_prefix(layer.name)
            layer.set_weights([flat[f"params/encoder/{prefix}/kernel"]])
        elif isinstance(layer, keras.layers.BatchNormalization):
            prefix = _flax_prefix(layer.name)
            layer.set_weights(
                [
                    flat[f"params/encoder/{prefix}/scale"],
                    flat[f"params/encoder/{prefix}/bias"],
                    flat[f"batch_stats/encoder/{prefix}/mean"],
                    flat[f"batch_stats/encoder/{prefix}/var"],
                ]
            )
    for i, layer in enumerate(dense):
        prefix = f"params/head/dense_{i}"
        layer.set_weights([flat[f"{prefix}/kernel"], flat[f"{prefix}/bias"]])


def _flax_prefix(name: str) -> str:
    """``unit_2_conv_0`` -> ``unit_2/conv_0``; ``stem_bn`` -> ``stem_bn``."""
    if name.startswith("unit_"):
        number, rest = name[len("unit_") :].split("_", 1)
        return f"unit_{number}/{rest}"
    return name


def check(path: str, arch: dict) -> dict:
    """Inference outputs with pclr-jax's weights against pclr-jax's (from ``path``)."""
    data = dict(np.load(path))
    model = build_model(arch)
    load_flax_variables(model, data)
    embed, z = model(data["input"], training=False)
    return {
        "embed_max_abs_diff": float(np.abs(embed.numpy() - data["embed"]).max()),
        "projection_max_abs_diff": float(np.abs(z.numpy() - data["projection"]).max()),
        "max_abs_output": float(np.abs(data["embed"]).max()),
    }


def setup(args, arch: dict):
    device = select_device(args.device)
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.dtype == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    kernels = "cuDNN" if device == "gpu" else "oneDNN"
    info = {
        "framework": f"TensorFlow {tf.__version__} + {KERAS_NAME}, {kernels}, no XLA",
        "device": device,
    }
    pairs = args.batch_pairs
    if args.workload == "train":
        model = build_model(arch)
        info["n_params"] = int(model.count_params())
        optimizer = keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7)
        shape = (pairs, arch["n_samples"], arch["n_leads"])
        views = tf.constant(
            np.concatenate([rng.normal(size=shape), rng.normal(size=shape)]).astype(np.float32)
        )

        @tf.function(jit_compile=False)
        def train_step(ecgs):
            with tf.GradientTape() as tape:
                _, z = model(ecgs, training=True)
                loss = ntxent(z[:pairs], z[pairs:])
            grads = tape.gradient(loss, model.trainable_variables)
            grads, _ = tf.clip_by_global_norm(grads, 1.0)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        def step():
            train_step(views).numpy()

        info["ecgs_per_step"] = 2 * pairs
    elif args.workload == "embed":
        model = build_model(arch, with_head=False)
        info["n_params"] = int(model.count_params())
        n = args.batch_size or 2 * pairs
        x = rng.normal(0, 0.5, (n, arch["n_samples"], arch["n_leads"])).astype(np.float32)

        def step():
            model.predict(x, batch_size=n, verbose=0)

        info["ecgs_per_step"] = n
    elif args.workload == "loss":
        dim = arch["head_sizes"][-1] if arch["head_sizes"] else arch["unit_filters"][-1]
        z_a = tf.constant(rng.normal(size=(pairs, dim)).astype(np.float32))
        z_b = tf.constant(rng.normal(size=(pairs, dim)).astype(np.float32))

        @tf.function(jit_compile=False)
        def loss_and_grad(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = ntxent(a, b)
            return loss, tape.gradient(loss, [a, b])

        def step():
            loss_and_grad(z_a, z_b)[0].numpy()

        info.update(n_params=0, ecgs_per_step=2 * pairs)
    else:
        raise SystemExit(f"tf_keras peer: no {args.workload!r} workload (train, embed, loss)")
    return step, info


def main() -> None:
    protocol.peer_main(__doc__.split("\n")[0], setup, check, device_peak_mib)


if __name__ == "__main__":
    main()
