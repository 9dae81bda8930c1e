"""``pclr study``: several arms x several seeds at equal budget, one report (docs/studies.md).

Examples::

    # Every arm at every seed, one after the other (resumable: run it again to continue):
    pclr study run --config configs/studies/loss_variants.py --workdir runs/loss_study

    # One cell, e.g. as a SLURM array task; then aggregate whatever has finished:
    pclr study run --config configs/studies/loss_variants.py --workdir runs/loss_study \\
        --arm siglip --seed 1
    pclr study report runs/loss_study

    # A reduced budget (recorded in the study; every arm gets it):
    pclr study run --config configs/studies/loss_variants.py --workdir runs/short \\
        --set base.total_steps=180 --set 'seeds=(0, 1, 2)'

    # Publish the report with every cell's config, result and items:
    pclr study report runs/loss_study --publish docs/studies/loss_variants_full

    # How many seeds a difference of 0.02 needs, from a pilot study:
    pclr study plan --from runs/short --detect 0.02

    # ... for a planned study with a pre-registered primary family (its comparisons and seeds):
    pclr study plan --from docs/studies/loss_variants_synthetic --detect 0.03 \\
        --config configs/studies/loss_variants_full.py
"""

from __future__ import annotations

import argparse
import sys

from pclr_jax.study.multiplicity import CORRECTIONS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="compare arms (losses, temperatures, batch sizes) over seeds at equal budget",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="train and evaluate the study's cells (resumable)")
    run.add_argument(
        "--config",
        help="study config file, FILE[:ARG] (default: the file and --set assignments the "
        "--workdir's study was started with; further --set are applied after those)",
    )
    run.add_argument("--workdir", required=True, help="the study's directory")
    run.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="override a study field (Python literal), e.g. base.total_steps=180; repeatable",
    )
    run.add_argument(
        "--arm",
        action="append",
        default=[],
        help="run only this arm; repeatable; 'random_init' is each seed's untrained baseline",
    )
    run.add_argument(
        "--seed", action="append", default=[], type=int, help="run only this seed; repeatable"
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    run.add_argument(
        "--compilation-cache",
        help="JAX's persistent compilation cache, shared by the cells (seeds of one arm compile "
        "the same programs); default WORKDIR/xla_cache, 'none' for no cache; ignored when "
        "JAX_COMPILATION_CACHE_DIR is set",
    )
    run.add_argument(
        "--no-report", action="store_true", help="do not write the report after the cells"
    )
    run.set_defaults(func=_run)
    report = actions.add_parser("report", help="aggregate the finished cells of a study")
    report.add_argument("workdir", help="the study's directory")
    report.add_argument("--reference", help="reference arm (default: the study's)")
    report.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="holm",
        help="multiplicity correction over the study's arm x metric comparisons (within the "
        "primary and the secondary family separately when the study pre-registered "
        "primary_metrics): holm (family-wise error, default), bh (Benjamini-Hochberg false "
        "discovery rate), none",
    )
    report.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples of the test patients for the intervals over seeds and test set",
    )
    report.add_argument(
        "--publish",
        metavar="DIR",
        help="write the report into DIR with study.json and every cell's config.json, "
        "result.json and items.npz (a folder to commit, e.g. docs/studies/NAME)",
    )
    report.set_defaults(func=_report)
    plan = actions.add_parser(
        "plan", help="seeds needed to detect a difference, from a pilot study's report"
    )
    plan.add_argument(
        "--from", dest="pilot", required=True, help="the pilot study's folder (its summary.csv)"
    )
    plan.add_argument(
        "--detect", type=float, default=0.02, help="the difference to detect (default 0.02)"
    )
    plan.add_argument("--power", type=float, default=0.8, help="the power wanted (default 0.8)")
    plan.add_argument(
        "--config",
        help="the planned study's config, FILE[:ARG]: plan for its comparisons (its primary "
        "family's when it pre-registers primary_metrics, the secondary family's apart) and give "
        "the detectable difference at its seeds",
    )
    plan.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of --config's study (Python literal); repeatable",
    )
    plan.add_argument(
        "--comparisons",
        type=int,
        help="comparisons the planned study makes (its primary family's with --config; "
        "default: --config's, else the pilot's), for the correction",
    )
    plan.set_defaults(func=_plan)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(args) -> int:
    import pathlib

    from absl import logging as absl_logging

    from pclr_jax.study import runner
    from pclr_jax.study.report import write_report
    from pclr_jax.study.spec import load_study

    workdir = pathlib.Path(args.workdir)
    config, assignments = args.config, args.set
    if config is None:
        if not (workdir / runner.STUDY_FILE).exists():
            raise ValueError(f"--config is needed: {workdir} holds no study yet")
        source = runner.recorded_source(workdir)
        config = source["config"]
        assignments = [*source["set"], *(assignments or [])]
    spec = load_study(config, assignments or ())
    runner.record_study(spec, workdir, {"config": config, "set": list(assignments or ())})
    _use_compilation_cache(args.compilation_cache or str(workdir / "xla_cache"))
    # Orbax and grain log every file operation at INFO; keep the terminal for the study.
    absl_logging.set_verbosity(absl_logging.WARNING)
    counts = runner.run_study(
        spec, workdir, arms=args.arm, seeds=args.seed, retry_failed=args.retry_failed, log=_log
    )
    _log(
        f"cells this call: {counts['finished']} finished, {counts['skipped']} skipped, "
        f"{counts['failed']} failed, {counts['stopped']} stopped"
    )
    if not args.no_report:
        _log(f"wrote {write_report(workdir)}")
    return 1 if counts["failed"] or counts["stopped"] else 0


def _use_compilation_cache(directory: str) -> None:
    import os

    import jax

    if directory != "none" and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", directory)


def _report(args) -> int:
    from pclr_jax.study.report import write_report

    path = write_report(
        args.workdir,
        args.reference,
        correction=args.correction,
        n_bootstrap=args.bootstrap,
        publish=args.publish,
    )
    print(path.read_text())
    _log(f"wrote {path}")
    return 0


def _plan(args) -> int:
    from pclr_jax.study.plan import format_plan
    from pclr_jax.study.spec import load_study

    if args.set and not args.config:
        raise ValueError("--set changes the planned study: it needs --config")
    planned = load_study(args.config, args.set) if args.config else None
    print(format_plan(args.pilot, args.detect, args.power, args.comparisons, planned))
    return 0
