"""``pclr train``: PCLR pretraining (the same program as ``python train.py``).

Flags are absl/ml_collections flags: ``--config=configs/default.py`` (a config file),
``--config.FIELD=VALUE`` to override any field, ``--workdir=DIR`` for everything the run writes.

Exit status: 0 when the run finished or was stopped by SIGTERM/SIGINT (a checkpoint saved); 75
(``EX_TEMPFAIL``) when another process of a multi-host job died (restart every process with the
same command to resume, :mod:`pclr_jax.runtime.peer_watch`); 1 on an error.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pretrain PCLR (python train.py flags: --config=FILE --config.FIELD=V --workdir=DIR)",
        add_help=False,
    )
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: run_absl(["pclr train", *args.flags]), passthrough=True)


def run_absl(argv: list[str]) -> int:
    """Parses absl flags from ``argv`` and runs training (``train.py``'s ``main``)."""
    from absl import app, flags
    from ml_collections import config_flags

    _make_config_package_importable(argv)
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
        flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and exports.")
        flags.mark_flags_as_required(["config", "workdir"])

    def main(_argv):
        from absl import logging as absl_logging

        from pclr_jax.training.loop import train_and_evaluate

        # Orbax and grain log every file operation at INFO; keep the terminal for the run's own
        # messages (warnings and errors still show).
        absl_logging.set_verbosity(absl_logging.WARNING)
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

    try:
        app.run(main, argv=argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _make_config_package_importable(argv: list[str]) -> None:
    """Puts the folder holding ``configs/`` on ``sys.path`` for ``--config=.../configs/X.py``.

    Config files build on each other (``from configs import default``), which must work from any
    working directory, as with ``pclr train`` run outside the repository.
    """
    for arg in argv:
        if arg.startswith("--config="):
            path = pathlib.Path(arg.split("=", 1)[1].split(":", 1)[0]).resolve()
            if path.parent.name == "configs" and (path.parent / "__init__.py").exists():
                root = str(path.parent.parent)
                if root not in sys.path:
                    sys.path.insert(0, root)


if __name__ == "__main__":
    sys.exit(run_absl(sys.argv))
