"""TensorFlow's (oneDNN) convolutions alone, per encoder layer: the peer side of the per-layer
table of ``benchmarks/onednn_gate.py`` (issue 23, docs/speed_cpu.md).

Runs in the tf.keras peer environment (no pclr-jax needed). For each kernel-16 layer of the full
encoder (4,096 samples, released widths) it times, at batch ``--batch`` ECGs, the forward
convolution and its input and kernel gradients as TensorFlow runs them for ``Conv1D`` (a 2-D
convolution over a height of 1: ``Conv2D``, ``Conv2DBackpropInput``, ``Conv2DBackpropFilter``,
'SAME' padding), each inside its own ``tf.function``, median of ``--rounds`` calls after two
warm-up calls, in milliseconds. The stem's input gradient is timed but left out of the total
(a training step does not need it), as in the gate's sum.

    PEER_TF_VENV/bin/python benchmarks/peers/tf_conv_layers.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import tensorflow as tf

KERNEL = 16
# (name, input samples, input channels, output channels, stride) of the released encoder.
LAYERS = (
    ("stem_conv", 4096, 12, 64, 1),
    ("unit_0/conv_0", 4096, 64, 128, 1),
    ("unit_0/conv_1", 4096, 128, 128, 4),
    ("unit_1/conv_0", 1024, 128, 196, 1),
    ("unit_1/conv_1", 1024, 196, 196, 4),
    ("unit_2/conv_0", 256, 196, 256, 1),
    ("unit_2/conv_1", 256, 256, 256, 4),
    ("unit_3/conv_0", 64, 256, 320, 1),
    ("unit_3/conv_1", 64, 320, 320, 4),
)


def _median_ms(fn, args, rounds: int) -> float:
    fn(*args).numpy()
    fn(*args).numpy()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def time_layer(samples: int, c_in: int, c_out: int, stride: int, batch: int, rounds: int):
    """``{"fwd", "bwd_data", "bwd_weights"}`` -> median ms of one layer's three passes."""
    strides = [1, 1, stride, 1]
    x = tf.random.normal((batch, 1, samples, c_in))
    kernel = tf.random.normal((1, KERNEL, c_in, c_out))
    dy = tf.random.normal((batch, 1, samples // stride, c_out))
    fwd = tf.function(lambda x, k: tf.nn.conv2d(x, k, strides, "SAME"))
    bwd_data = tf.function(
        lambda k, dy: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[batch, 1, samples, c_in],
            filter=k,
            out_backprop=dy,
            strides=strides,
            padding="SAME",
        )
    )
    bwd_weights = tf.function(
        lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
            input=x,
            filter_sizes=[1, KERNEL, c_in, c_out],
            out_backprop=dy,
            strides=strides,
            padding="SAME",
        )
    )
    return {
        "fwd": _median_ms(fwd, (x, kernel), rounds),
        "bwd_data": _median_ms(bwd_data, (kernel, dy), rounds),
        "bwd_weights": _median_ms(bwd_weights, (x, dy), rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="ECGs per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    layers, totals = {}, dict.fromkeys(("fwd", "bwd_data", "bwd_weights"), 0.0)
    for name, samples, c_in, c_out, stride in LAYERS:
        layers[name] = time_layer(samples, c_in, c_out, stride, args.batch, args.rounds)
        for kind, ms in layers[name].items():
            if not (name == "stem_conv" and kind == "bwd_data"):
                totals[kind] += ms
        print(name, {k: round(v, 1) for k, v in layers[name].items()}, flush=True)
    print(
        "step's passes, ms:",
        {k: round(v, 1) for k, v in totals.items()},
        round(sum(totals.values()), 1),
    )
    if args.json:
        result = {
            "tensorflow": tf.__version__,
            "machine": platform.processor() or platform.machine(),
            "batch": args.batch,
            "rounds": args.rounds,
            "layers_ms": layers,
            "step_passes_ms": totals,
            "step_passes_total_ms": sum(totals.values()),
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
