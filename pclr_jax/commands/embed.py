"""``pclr embed``: ECG files -> a table of embeddings (``sample_id, latent_0 ... latent_{D-1}``).

Inputs are WFDB records (``.hea`` files or folders of them), ``.npy`` arrays and HDF5 files (see
:mod:`pclr_jax.signals.records` for the layouts and assumptions). Each record is prepared with
:func:`pclr_jax.signals.preprocess.prepare_ecg` for the model's input length and leads; records
that fail
are written with their reason to ``<output stem>.rejected.csv`` beside the output (always
written, possibly empty) and counted on screen, or stop the run with ``--strict``. Every record
read is either a row of the output or a row of the report.

Sample ids survive moving the data: a record found in a folder input is named by its path
relative to that folder, without extension; a file given by itself by its name
(``--sample-id``). ``--allow CHECK`` embeds records that fail that check anyway and lists them in
``<output stem>.allowed.csv``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

OUTPUT_SUFFIXES = (".csv", ".tsv", ".parquet")
REJECTED_COLUMNS = ("sample_id", "path", "reason", "message")
# ``pclr embed`` prints a progress line every this many ECGs when stderr is not a terminal.
LOG_EVERY_ECGS = 1000


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed ECG files with PCLR weights",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="Keras .h5 file, Keras SavedModel directory or pclr-jax Orbax directory",
    )
    parser.add_argument(
        "--input", required=True, nargs="+", help="WFDB .hea files/records, folders, .npy, .h5"
    )
    parser.add_argument("--output", required=True, help="embedding table: .csv, .tsv or .parquet")
    parser.add_argument(
        "--sample-id",
        choices=("relative", "name", "path"),
        default="relative",
        help="relative (default): a folder's records by their path relative to the folder, "
        "files given one by one by their name; name: the record name alone; path: the path as "
        "typed (changes when the data move). All without extension",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
    parser.add_argument(
        "--allow",
        nargs="+",
        default=[],
        choices=("flat_lead", "units", "too_short", "too_long"),
        metavar="CHECK",
        help="embed records that fail these checks anyway, listed in <output stem>.allowed.csv: "
        "flat_lead, units (amplitudes that look like uV), too_short / too_long (duration)",
    )
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
        default=None,
        help="final: the weights' output (projection if they have a head); embed: the pooled "
        "layer. Default: embed for encoders pclr-jax trained (what their evaluation used), "
        "final for other Keras files (as ml4h)",
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


def _failures_frame(errors):
    import pandas as pd

    return pd.DataFrame(
        [(e.record_id, e.source, e.reason, str(e)) for e in errors],
        columns=list(REJECTED_COLUMNS),
    )


def _by_reason(frame) -> str:
    return ", ".join(f"{k} {v}" for k, v in frame["reason"].value_counts().items())


def run(args: argparse.Namespace) -> int:
    from pclr_jax.embedding.embedder import load_encoder
    from pclr_jax.runtime.progress import Progress
    from pclr_jax.signals.records import (
        ArrayOptions,
        ECGValidationError,
        input_files,
        iter_input_files,
    )

    output = pathlib.Path(args.output)
    if output.suffix not in OUTPUT_SUFFIXES:
        raise SystemExit(f"--output must end in one of {OUTPUT_SUFFIXES}: {output}")
    rejected_path = output.with_name(output.stem + ".rejected.csv")
    allowed_path = output.with_name(output.stem + ".allowed.csv")
    try:
        files = input_files(args.input, args.sample_id)
    except ValueError as error:
        print(f"pclr embed: {error}", file=sys.stderr)
        return 2
    encoder = load_encoder(args.weights, args.output_layer, args.batch_size)
    print(f"{args.weights}: {encoder.describe_output()}", file=sys.stderr)
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
    progress = Progress("embedding", unit="ECG", every=LOG_EVERY_ECGS)

    def counted(items):
        for item in items:
            n_read[0] += 1
            progress.update()
            yield item

    items = counted(iter_input_files(files, options, args.hdf5_dataset))
    try:
        result = encoder.embed_records(
            items,
            leads,
            args.resample,
            args.expected_duration or None,
            strict=args.strict,
            allow=args.allow,
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

    import pandas as pd

    columns = [f"latent_{i}" for i in range(encoder.embed_dim)]
    frame = pd.DataFrame(result.embeddings, columns=columns)
    frame.insert(0, "sample_id", result.sample_ids)
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_table(frame, output)
    rejected = _failures_frame(result.rejected)
    rejected.to_csv(rejected_path, index=False)
    print(
        f"{n_in} records: {len(result.sample_ids)} embedded ({encoder.embed_dim}-d, output "
        f"{encoder.output!r}) -> {output}; {len(result.rejected)} rejected -> {rejected_path}"
    )
    if len(rejected):
        print("rejected by reason: " + _by_reason(rejected))
    if args.allow:
        allowed = _failures_frame(result.allowed)
        allowed.to_csv(allowed_path, index=False)
        n_records = allowed["sample_id"].nunique()
        print(
            f"embedded despite a failed check (--allow {' '.join(args.allow)}): {n_records} "
            f"records -> {allowed_path}" + (f" ({_by_reason(allowed)})" if len(allowed) else "")
        )
    return 0
