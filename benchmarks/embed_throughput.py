"""Embedding throughput (ECG/s): ``pclr embed``'s jitted ``Encoder.embed`` vs Keras ``predict``.

Both run the released 12-lead architecture (4096 x 12 -> 320) with the SAME random weights: the
Keras 3 model is rebuilt from the released graph in
``tests/data/keras/pclr_keras_model_config.json``, given random weights, saved as ``.h5`` and
loaded with :func:`pclr_jax.load_encoder` (h5py only).
The peer is Keras 3 on its JAX backend (``KERAS_BACKEND=jax``): TensorFlow is not installed here,
so tf.keras -- what ml4h's ``get_representations`` runs -- cannot be timed on this machine.

For each batch size, after one untimed warm-up call each (compilation), the two paths are timed
alternately ``--repeats`` times on the same ``(N, 4096, 12)`` float32 array; the table reports the
median ECG/s and the ratio. The outputs are compared first (max abs difference). Prints a
Markdown table and writes JSON.

    KERAS_BACKEND=jax python benchmarks/embed_throughput.py --n 128 --batch-sizes 32 64 \
        --out benchmarks/results/embed_throughput.json

Name the machine, and whether other jobs shared it, when quoting the numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from pclr_jax import load_encoder  # noqa: E402
from pclr_jax.weights.keras_graph import decode_tuples  # noqa: E402

GRAPH = (
    pathlib.Path(__file__).resolve().parents[1] / "tests/data/keras/pclr_keras_model_config.json"
)


def keras_model(graph: pathlib.Path, seed: int) -> keras.Model:
    """The released graph in Keras 3 with random weights (He-scaled kernels, random biases and
    batch-norm parameters/statistics)."""
    data = json.loads(graph.read_text())
    config = decode_tuples(data)["config"]
    for layer in config["layers"]:  # zeros build fast; random values are set below
        if "kernel_initializer" in layer["config"]:
            layer["config"]["kernel_initializer"] = {"class_name": "Zeros", "config": {}}
    model = keras.Model.from_config(config)
    rng = np.random.default_rng(seed)
    draw = {
        "kernel": lambda s: rng.normal(0, np.sqrt(2 / np.prod(s[:-1])), s),
        "gamma": lambda s: rng.uniform(0.5, 1.5, s),
        "beta": lambda s: rng.normal(0, 0.1, s),
        "bias": lambda s: rng.normal(0, 0.1, s),
        "moving_mean": lambda s: rng.normal(0, 0.3, s),
        "moving_variance": lambda s: rng.uniform(0.3, 2.0, s),
    }
    for weight in model.weights:
        shape = tuple(weight.shape)
        weight.assign(draw[weight.path.split("/")[-1]](shape).astype(np.float32))
    return model


def ecgs_per_second(fn, x: np.ndarray) -> float:
    start = time.perf_counter()
    fn(x)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128, help="ECGs per timed call")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--graph", type=pathlib.Path, default=GRAPH)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON results file")
    args = parser.parse_args()

    model = keras_model(args.graph, seed=0)
    x = np.random.default_rng(1).normal(0, 0.5, (args.n, 4096, 12)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pclr_random.h5")
        model.save(path)
        for batch in args.batch_sizes:
            encoder = load_encoder(path, batch_size=batch)

            def keras_predict(ecgs, batch=batch):
                return model.predict(ecgs, batch_size=batch, verbose=0)

            start = time.perf_counter()
            ours = encoder.embed(x[:batch])
            ours_first = time.perf_counter() - start
            start = time.perf_counter()
            theirs = keras_predict(x[:batch])
            keras_first = time.perf_counter() - start
            diff = float(np.abs(ours - theirs).max())
            scale = max(1.0, float(np.abs(theirs).max()))
            speeds = {"pclr_jax": [], "keras": []}
            for _ in range(args.repeats):
                speeds["pclr_jax"].append(ecgs_per_second(encoder.embed, x))
                speeds["keras"].append(ecgs_per_second(keras_predict, x))
            row = {
                "batch_size": batch,
                "n_ecgs": args.n,
                "pclr_jax_ecg_per_s": statistics.median(speeds["pclr_jax"]),
                "keras_ecg_per_s": statistics.median(speeds["keras"]),
                "pclr_jax_all": speeds["pclr_jax"],
                "keras_all": speeds["keras"],
                "pclr_jax_first_call_s": ours_first,
                "keras_first_call_s": keras_first,
                "max_abs_diff": diff,
                "max_abs_output": scale,
            }
            row["ratio"] = row["pclr_jax_ecg_per_s"] / row["keras_ecg_per_s"]
            rows.append(row)

    print(f"\nEmbedding throughput, {args.n} ECGs (4096 x 12 -> 320), median of {args.repeats}")
    print("| batch | pclr-jax Encoder.embed ECG/s | Keras 3 (jax) predict ECG/s | ratio |"
          " first call s (ours / Keras) | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['pclr_jax_ecg_per_s']:.1f} | {r['keras_ecg_per_s']:.1f} | "
            f"{r['ratio']:.2f}x | {r['pclr_jax_first_call_s']:.1f} / {r['keras_first_call_s']:.1f}"
            f" | {r['max_abs_diff']:.2e} |"
        )
    result = {
        "benchmark": "embed_throughput",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "jax_backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
        },
        "versions": {"jax": jax.__version__, "keras": keras.__version__},
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
