"""``pclr prepare``: write a prepared data set (tfds ``array_record`` shards + per-split index).

Examples::

    # The synthetic default (no download):
    pclr prepare pclr_synthetic --data-dir ~/pclr_data

    # PTB-XL from a PhysioNet download, ECGs at the model's 4096 samples:
    pclr prepare ptbxl --manual-dir ~/ptb-xl-1.0.3 --data-dir ~/pclr_data

    # A folder of WFDB/HDF5/.npy files with records.csv (record, patient_id, ...):
    pclr prepare pclr_ecg_folder --manual-dir my_ecgs --data-dir ~/pclr_data --config tiny

Records are read and resampled by ``--workers`` processes while this process serialises and writes
shards; with ``--beam-runner`` the same work runs as an Apache Beam pipeline instead (see
docs/data.md for Dataflow, Flink and Spark):

    pclr prepare ptbxl --manual-dir ~/ptb-xl-1.0.3 --data-dir ~/pclr_data --beam-runner DirectRunner
 A data set (name, config, version) that is complete in ``--data-dir`` is not prepared
again; an interrupted run leaves only a temporary directory, which the next run replaces. Prints
the counts: records in = written + quarantined + duplicate copies (see ``quarantine.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DATASETS = ("pclr_synthetic", "ptbxl", "mimic_iv_ecg", "code15", "pclr_ecg_folder")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="prepare a data set as tfds array_record shards with a per-split index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=DATASETS, help="data set builder")
    parser.add_argument("--manual-dir", help="the source files (all but pclr_synthetic)")
    parser.add_argument(
        "--data-dir", help="where prepared data sets live (default: tfds's, ~/tensorflow_datasets)"
    )
    parser.add_argument("--config", default="default", help="builder config (default: default)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reader processes (default: CPUs - 1; 0 reads in this process); ignored on Beam",
    )
    parser.add_argument(
        "--beam-runner",
        help="generate as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, "
        "FlinkRunner, SparkRunner...; needs pip install 'pclr-jax[beam]'); default: the process "
        "pool",
    )
    parser.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Beam pipeline option (repeatable), e.g. --beam-option project=my-project "
        "--beam-option temp_location=gs://bucket/tmp; see docs/data.md",
    )
    parser.set_defaults(func=run)


def download_config(args: argparse.Namespace):
    """The tfds ``DownloadConfig``: the manual directory and, with ``--beam-runner``, the runner
    and its pipeline options (``--beam-option KEY=VALUE`` -> ``--KEY=VALUE``)."""
    import tensorflow_datasets as tfds

    manual_dir = os.path.expanduser(args.manual_dir) if args.manual_dir else None
    if not args.beam_runner:
        if args.beam_option:
            raise ValueError("--beam-option needs --beam-runner")
        return tfds.download.DownloadConfig(manual_dir=manual_dir)
    flags = beam_flags(args.beam_option)
    from apache_beam.options.pipeline_options import PipelineOptions

    return tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        beam_runner=args.beam_runner,
        beam_options=PipelineOptions(flags),
    )


def beam_flags(options: list[str]) -> list[str]:
    """Beam pipeline flags from ``--beam-option KEY=VALUE`` values (``--KEY=VALUE``).

    Raises ``ValueError`` when Apache Beam is not installed or an option is not ``KEY=VALUE``.
    """
    try:
        import apache_beam  # noqa: F401
    except ImportError as error:
        raise ValueError("--beam-runner needs Apache Beam: pip install 'pclr-jax[beam]'") from error
    flags = []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--beam-option takes KEY=VALUE, got {option!r}")
        flags.append(f"--{key.removeprefix('--')}={value}")
    return flags


def run(args: argparse.Namespace) -> int:
    import tensorflow_datasets as tfds

    from pclr_jax.data.builders import BUILDERS

    builder_cls = BUILDERS[args.name]
    configs = [config.name for config in builder_cls.BUILDER_CONFIGS]
    if args.config not in configs:
        print(
            f"pclr prepare: {args.name} has configs {configs}, not {args.config!r}", file=sys.stderr
        )
        return 2
    # The builders report their own progress (pclr_jax.runtime.progress: a bar on a terminal, plain
    # lines in a log); tfds' bars would redraw into log files.
    tfds.disable_progress_bar()
    try:
        config = download_config(args)
    except ValueError as error:
        print(f"pclr prepare: {error}", file=sys.stderr)
        return 2
    builder = builder_cls(config=args.config, data_dir=args.data_dir, workers=args.workers)
    reused = builder.is_prepared()
    start = time.perf_counter()
    builder.download_and_prepare(download_config=config)
    elapsed = time.perf_counter() - start
    directory = builder.data_path
    report_path = directory / "prepare_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    print(summary(report, os.fspath(directory), None if reused else elapsed))
    return 0


def summary(report: dict, directory: str, elapsed: float | None) -> str:
    """Human-readable counts of a prepare report."""
    lines = [f"{report.get('name')}/{report.get('config')} {report.get('version')}: {directory}"]
    if elapsed is None:
        lines.append("already prepared: nothing to do")
    written = report.get("written", {})
    for split, count in written.items():
        patients = report.get("patients", {}).get(split, 0)
        lines.append(f"  {split:<10} {count:>9,} ECGs  {patients:>8,} patients")
    lines.append(
        f"  records in {report.get('input_records', 0):,} = written "
        f"{report.get('written_total', 0):,} + quarantined {report.get('quarantined', 0):,} "
        f"+ duplicate copies {report.get('duplicates', 0):,}"
    )
    if report.get("duplicates_by_content"):
        lines.append(
            f"  duplicate copies found by content: {report['duplicates_by_content']:,} "
            "(see duplicates.csv)"
        )
    for reason, count in report.get("quarantined_by_reason", {}).items():
        lines.append(f"  quarantined {reason}: {count:,} (see quarantine.csv)")
    if elapsed is not None and elapsed > 0:
        lines.append(
            f"  {elapsed:.1f} s, {report.get('written_total', 0) / elapsed:,.0f} ECG/s written"
        )
    return "\n".join(lines)
