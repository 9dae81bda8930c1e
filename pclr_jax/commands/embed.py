"""``pclr embed``: ECG files -> a table of embeddings (``sample_id, latent_0 ... latent_{D-1}``).

Inputs are WFDB records (``.hea`` files or folders of them), ``.npy`` arrays and HDF5 files (see
:mod:`pclr_jax.records` for the layouts and assumptions). Each record is prepared with
:func:`pclr_jax.preprocess.prepare_ecg` for the model's input length and leads; records that fail
are written with their reason to ``<output stem>.rejected.csv`` beside the output (always
written, possibly empty) and counted on screen, or stop the run with ``--strict``. Every record
read is either a row of the output or a row of the report.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

OUTPUT_SUFFIXES = (".csv", ".tsv", ".parquet")
REJECTED_COLUMNS = ("sample_id", "path", "reason", "message")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed ECG files with PCLR weights",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--weights", required=True, help="Keras .h5 file or Orbax directory")
    parser.add_argument(
        "--input", required=True, nargs="+", help="WFDB .hea files/records, folders, .npy, .h5"
    )
    parser.add_argument("--output", required=True, help="embedding table: .csv, .tsv or .parquet")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
    parser.add_argument("--batch-size", type=int, default=32, help="ECGs per compiled step")
    parser.add_argument(
        "--resample",
        choices=("ml4h", "antialias"),
        default="ml4h",
        help="ml4h: linear interpolation as the release expects (default); antialias: "
        "scipy.signal.resample_poly",
    )
    parser.add_argument(
        "--output-layer",
        choices=("final", "embed"),
        default="final",
        help="final: the weights' output (projection if they have a head); embed: pooled layer",
    )
    parser.add_argument(
        "--leads",
        nargs="+",
        default=None,
        help="leads the model takes, in order (default: the 12 standard leads for a 12-lead "
        "model; required for other models, e.g. --leads I)",
    )
    parser.add_argument(
        "--expected-duration",
        type=float,
        default=10.0,
        help="expected record duration in s (+/- 0.5 s); 0 accepts any duration",
    )
    parser.add_argument(
        "--sampling-rate",
        type=float,
        default=None,
        help=".npy/HDF5 inputs: sampling rate in Hz (default: samples / 10 s)",
    )
    parser.add_argument(
        "--array-units", default="mV", help=".npy/HDF5 inputs: unit of the values (mV, uV, V)"
    )
    parser.add_argument(
        "--array-leads",
        nargs="+",
        default=None,
        help=".npy/HDF5 inputs: lead names along the last axis (default: the standard 12)",
    )
    parser.add_argument("--hdf5-dataset", default=None, help="HDF5 dataset or group to read")
    parser.add_argument(
        "--trim-zero-padding",
        action="store_true",
        help=".npy/HDF5 inputs: drop all-zero samples at both ends (CODE-15%%)",
    )
    parser.set_defaults(func=run)


def _write_table(frame, path: pathlib.Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm import tqdm

    from pclr_jax.embedder import load_encoder
    from pclr_jax.records import ArrayOptions, ECGValidationError, iter_records

    output = pathlib.Path(args.output)
    if output.suffix not in OUTPUT_SUFFIXES:
        raise SystemExit(f"--output must end in one of {OUTPUT_SUFFIXES}: {output}")
    rejected_path = output.with_name(output.stem + ".rejected.csv")
    encoder = load_encoder(args.weights, args.output_layer, args.batch_size)
    options = ArrayOptions(
        sampling_rate=args.sampling_rate,
        lead_names=tuple(args.array_leads) if args.array_leads else ArrayOptions.lead_names,
        units=args.array_units,
        trim_zero_padding=args.trim_zero_padding,
    )
    try:
        leads = encoder.input_leads(args.leads)
    except ValueError as error:
        raise SystemExit(f"--leads: {error}") from error
    n_read = [0]  # records read, counted independently of embed_records

    def counted(items):
        for item in items:
            n_read[0] += 1
            yield item

    items = counted(iter_records(args.input, options, args.hdf5_dataset))
    progress = tqdm(items, desc="embedding", unit="ECG", file=sys.stderr)
    try:
        result = encoder.embed_records(
            progress, leads, args.resample, args.expected_duration or None, strict=args.strict
        )
    except ECGValidationError as error:
        print(f"error ({error.reason}): {error}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    n_in = n_read[0]
    if len(result.sample_ids) + len(result.rejected) != n_in:
        raise RuntimeError(
            f"{n_in} records read but {len(result.sample_ids)} embedded + "
            f"{len(result.rejected)} rejected"
        )

    columns = [f"latent_{i}" for i in range(encoder.embed_dim)]
    frame = pd.DataFrame(result.embeddings, columns=columns)
    frame.insert(0, "sample_id", result.sample_ids)
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_table(frame, output)
    rejected = pd.DataFrame(
        [(e.record_id, e.source, e.reason, str(e)) for e in result.rejected],
        columns=list(REJECTED_COLUMNS),
    )
    rejected.to_csv(rejected_path, index=False)
    print(
        f"{n_in} records: {len(result.sample_ids)} embedded ({encoder.embed_dim}-d, output "
        f"{args.output_layer!r}) -> {output}; {len(result.rejected)} rejected -> {rejected_path}"
    )
    if len(rejected):
        counts = rejected["reason"].value_counts()
        print("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
