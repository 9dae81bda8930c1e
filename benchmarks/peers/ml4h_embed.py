"""ml4h's own PCLR workflow, a contender of ``benchmarks/embed_pipeline.py``: a folder of WFDB
records to a CSV of ``sample_id, latent_0 ...``, as ml4h's ``model_zoo/PCLR`` README shows it.

What ml4h's README does, step by step, and what this script does for each:

* ``model = load_model("./PCLR.h5")`` (tf.keras): the same, ``compile=False`` (nothing to train);
* for each record, in sorted order: read it -- ml4h reads its own HDF5 tensors; a WFDB folder is
  read with ``wfdb.rdsamp`` (physical units, mV), the reader a WFDB user has;
* ``preprocess_ecg.process_ecg``: a ``(4096, 12)`` float64 array, each lead in ml4h's order
  ``np.interp``-ed from its samples onto 4,096 (copied here);
* the model: the README calls ``model(ecg)`` on one ECG at a time and
  ``get_representations`` calls ``model.predict`` on all of a list at once; this script calls
  ``model.predict(batch, batch_size=--batch-size)`` on ``--chunk`` ECGs at a time, predict's
  batching with a memory that does not grow with the cohort;
* a ``csv.writer`` row per ECG: ``sample_id`` (here the path relative to the folder, without
  extension, as ``pclr embed`` names it) and ``f"{value}"`` of each of the 320 values.

TensorFlow runs with oneDNN (its default on x86) and without XLA, as ml4h. Run it with the
interpreter of an environment that has TensorFlow, tf-keras and wfdb
(``pip install 'pclr-jax[peers-tf]'``, or a virtual environment of its own, see
docs/benchmarks.md). Prints ``RESULT {"framework": ...}``, the versions, for the driver.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MISSING_EXIT_CODE = 3  # this interpreter lacks TensorFlow, tf-keras or wfdb

try:
    import numpy as np
    import tensorflow as tf
    import wfdb
except ImportError as error:
    print(
        f"ml4h peer: cannot import {error.name!r} with {sys.executable}; install "
        "pip install 'tensorflow==2.21.*' 'tf-keras==2.21.*' wfdb numpy",
        file=sys.stderr,
    )
    sys.exit(MISSING_EXIT_CODE)

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def process_ecg(ecg: dict[str, np.ndarray]) -> np.ndarray:
    """ml4h's ``preprocess_ecg.process_ecg``: lead name -> mV samples over 10 s, to a
    ``(4096, 12)`` float64 array by ``np.interp`` of each lead."""
    out = np.zeros((4096, 12))
    for i, lead_name in enumerate(LEADS):
        lead = ecg[lead_name]
        out[:, i] = np.interp(np.linspace(0, 1, 4096), np.linspace(0, 1, lead.shape[0]), lead)
    return out


def records(folder: str) -> list[tuple[str, str]]:
    """``(sample id, record path)`` of every ``.hea`` under ``folder``, sorted by path."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f[: -len(".hea")]) for f in files if f.endswith(".hea")]
    return [(os.path.relpath(path, folder), path) for path in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a Keras .h5 file (PCLR.h5)")
    parser.add_argument("--input", required=True, help="a folder of WFDB records")
    parser.add_argument("--output", required=True, help="the CSV to write")
    parser.add_argument("--batch-size", type=int, default=32, help="model.predict's batch_size")
    parser.add_argument("--chunk", type=int, default=256, help="ECGs per model.predict call")
    args = parser.parse_args()

    keras = tf.keras
    legacy = keras.__name__.startswith("tf_keras")  # tf-keras installed: tf.keras 2, as ml4h
    version = __import__("tf_keras").__version__ if legacy else keras.version()
    framework = f"TensorFlow {tf.__version__}, {'tf-keras' if legacy else 'Keras'} {version}, "
    framework += f"oneDNN, no XLA; wfdb {wfdb.__version__}"
    print("RESULT " + json.dumps({"framework": framework}), flush=True)
    model = keras.models.load_model(args.weights, compile=False)
    latent_dimensions = int(model.output_shape[-1])
    with open(args.output, "w", newline="") as inference_file:
        writer = csv.writer(inference_file)
        writer.writerow(["sample_id", *[f"latent_{i}" for i in range(latent_dimensions)]])
        ids: list[str] = []
        ecgs: list[np.ndarray] = []

        def flush() -> None:
            latents = model.predict(np.stack(ecgs), batch_size=args.batch_size, verbose=0)
            for sample_id, row in zip(ids, latents, strict=True):
                writer.writerow([sample_id, *[f"{value}" for value in row]])
            ids.clear()
            ecgs.clear()

        for sample_id, path in records(args.input):
            signal, fields = wfdb.rdsamp(path)
            ecgs.append(process_ecg(dict(zip(fields["sig_name"], signal.T, strict=True))))
            ids.append(sample_id)
            if len(ecgs) == args.chunk:
                flush()
        if ecgs:
            flush()


if __name__ == "__main__":
    main()
