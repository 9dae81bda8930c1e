"""The ``pclr`` command line: ``pclr embed|convert|prepare|train|probe|bench|study``."""

from __future__ import annotations

import argparse
import importlib
import sys

from pclr_jax.runtime import host_memory

COMMANDS: tuple[str, ...] = ("embed", "convert", "prepare", "train", "probe", "bench", "study")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pclr", description="PCLR ECG representation learning in JAX."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pclr_jax.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    host_memory.keep_freed_memory()  # before JAX's threads exist
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        # Sub-commands with their own flag parser (``pclr train``: absl flags) get the rest.
        args.flags = [*args.flags, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
