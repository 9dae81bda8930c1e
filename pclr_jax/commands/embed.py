"""``pclr embed``: ECG files -> a table of embeddings (``sample_id, latent_0 ... latent_{D-1}``).

Inputs are WFDB records (``.hea`` files or folders of them), ``.npy`` arrays and HDF5 files (see
:mod:`pclr_jax.signals.records` for the layouts and assumptions), or a split of a prepared data
set (``--data NAME --data-dir D --split S``; sample ids are the index's ``record_id``). Each
record is prepared with :func:`pclr_jax.signals.preprocess.prepare_ecg` for the model's input
length and leads; records that fail are written with their reason to
``<output stem>.rejected.csv`` beside the output (always written, possibly empty) and counted on
screen, or stop the run with ``--strict``. Every record read is either a row of the output or a
row of the report; array files that hold no ECG are counted on screen.

Sample ids survive moving the data: a record found in a folder input is named by its path
relative to that folder, without extension; a file given by itself by its name
(``--sample-id``). ``--allow CHECK`` embeds records that fail that check anyway and lists them in
``<output stem>.allowed.csv``.

``--workers`` processes read and prepare records while this one runs the model; the output is
written part by part to ``<output>.parts/`` and assembled at the end, so a killed run continues
where it stopped when the same command is run again. ``--beam-runner`` runs the parts as an
Apache Beam pipeline; several ``jax.distributed`` processes (started as for ``pclr train``) each
embed their share. See docs/embedding.md.
"""

from __future__ import annotations

import argparse
import functools
import sys

from pclr_jax.embedding.plan import PART_RECORDS


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
    parser.add_argument("--input", nargs="+", help="WFDB .hea files/records, folders, .npy, .h5")
    parser.add_argument(
        "--data", help="instead of --input: a prepared data set (pclr prepare), e.g. ptbxl"
    )
    parser.add_argument("--data-dir", help="with --data: where it was prepared")
    parser.add_argument("--split", help="with --data: train, validation or test")
    parser.add_argument("--data-config", default=None, help="with --data: its config")
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
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that read and prepare records while this one runs the model (0: read "
        "here). Default: on a GPU/TPU host all cores but one, on the CPU one per 4 cores. The "
        "output is the same whatever the number",
    )
    parser.add_argument(
        "--part-records",
        type=int,
        default=PART_RECORDS,
        help=f"records per part written to <output>.parts/ (default {PART_RECORDS}): what a "
        "killed run loses at most, and the unit of work of a process or Beam worker",
    )
    parser.add_argument(
        "--beam-runner",
        help="embed the parts as an Apache Beam pipeline on this runner (DirectRunner, "
        "DataflowRunner, ...; pip install 'pclr-jax[beam]'); workers must see the input files "
        "and the output folder at the same paths",
    )
    parser.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Beam pipeline option (repeatable), as for pclr prepare",
    )
    parser.set_defaults(func=run)


def _by_reason(counts) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.most_common())


def _source(args: argparse.Namespace):
    """The records to embed: ``--input`` files or a ``--data`` split. Raises ``ValueError``."""
    if bool(args.input) == bool(args.data):
        raise ValueError("give --input FILES or --data NAME (with --data-dir and --split)")
    if args.data:
        if not (args.data_dir and args.split):
            raise ValueError("--data needs --data-dir and --split")
        from pclr_jax.data.prepared_source import PreparedReader, PreparedSource

        reader = PreparedReader(args.data, args.split, args.data_dir, args.data_config)
        return PreparedSource(reader)
    from pclr_jax.embedding.inputs import FileSource
    from pclr_jax.signals.records import ArrayOptions, input_files

    options = ArrayOptions(
        sampling_rate=args.sampling_rate,
        lead_names=tuple(args.array_leads) if args.array_leads else ArrayOptions.lead_names,
        units=args.array_units,
        trim_zero_padding=args.trim_zero_padding,
    )
    return FileSource(input_files(args.input, args.sample_id), options, args.hdf5_dataset)


def _run_options(args: argparse.Namespace):
    from pclr_jax.embedding.to_table import RunOptions

    load = None
    flags: list[str] = []
    if args.beam_runner:
        from pclr_jax.commands.prepare import beam_flags
        from pclr_jax.embedding.embedder import load_encoder

        flags = beam_flags(args.beam_option)
        load = functools.partial(load_encoder, args.weights, args.output_layer, args.batch_size)
    elif args.beam_option:
        raise ValueError("--beam-option needs --beam-runner")
    return RunOptions(
        workers=args.workers,
        part_records=args.part_records,
        strict=args.strict,
        write_allowed=bool(args.allow),
        beam_runner=args.beam_runner,
        beam_flags=tuple(flags),
        load_encoder=load,
    )


def run(args: argparse.Namespace) -> int:
    from pclr_jax.embedding.assemble import OUTPUT_SUFFIXES
    from pclr_jax.embedding.embedder import load_encoder
    from pclr_jax.embedding.parts import SettingsMismatch
    from pclr_jax.embedding.reading import InputSpec
    from pclr_jax.embedding.to_table import embed_to_table, output_paths
    from pclr_jax.runtime.distributed import maybe_initialize_distributed
    from pclr_jax.signals.records import ECGValidationError

    output, rejected_path, allowed_path = output_paths(args.output)
    if output.suffix not in OUTPUT_SUFFIXES:
        raise SystemExit(f"--output must end in one of {OUTPUT_SUFFIXES}: {output}")
    try:
        options = _run_options(args)
        source = _source(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"pclr embed: {error}", file=sys.stderr)
        return 2
    maybe_initialize_distributed()
    encoder = load_encoder(args.weights, args.output_layer, args.batch_size)
    print(f"{args.weights}: {encoder.describe_output()}", file=sys.stderr)
    try:
        leads = encoder.input_leads(args.leads)
    except ValueError as error:
        raise SystemExit(f"--leads: {error}") from error
    spec = InputSpec(
        encoder.config.n_samples,
        leads,
        args.resample,
        args.expected_duration or None,
        tuple(args.allow),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = embed_to_table(encoder, source, spec, output, options)
    except SettingsMismatch as error:
        print(f"pclr embed: {error}", file=sys.stderr)
        return 2
    except ECGValidationError as error:
        print(f"error ({error.reason}): {error}", file=sys.stderr)
        return 1
    if report.summary is None:  # processes other than 0: process 0 reports
        return 0
    summary = report.summary
    n_rejected = sum(summary.rejected.values())
    print(
        f"{summary.records} records: {summary.embedded} embedded ({encoder.embed_dim}-d, output "
        f"{encoder.output!r}) -> {output}; {n_rejected} rejected -> {rejected_path}"
    )
    if report.empty:
        shown = ", ".join(report.empty[:5]) + (", ..." if len(report.empty) > 5 else "")
        print(f"{len(report.empty)} file(s) held no ECG (0 rows), not counted as records: {shown}")
    if report.resumed_records:
        print(
            f"continued an interrupted run: {report.resumed_records} of {summary.records} "
            "records had been embedded before"
        )
    if n_rejected:
        print("rejected by reason: " + _by_reason(summary.rejected))
    if args.allow:
        print(
            f"embedded despite a failed check (--allow {' '.join(args.allow)}): "
            f"{summary.allowed_records} records -> {allowed_path}"
            + (f" ({_by_reason(summary.allowed)})" if summary.allowed else "")
        )
    return 0
