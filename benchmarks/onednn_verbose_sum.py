"""Sums oneDNN's own execution times from an ``ONEDNN_VERBOSE=1`` log, per primitive and pass.

Works on any program that calls oneDNN (pclr-jax's ``conv_impl="onednn"``, TensorFlow): run it
with ``ONEDNN_VERBOSE=1``, print a line starting with ``MARK`` before the steps to count (so that
warm-up and primitive creation are left out), and pass ``--steps`` (the steps after the mark)::

    python benchmarks/onednn_verbose_sum.py LOG --steps 3

Prints ms per step by (primitive, pass) and by shape. When the sum exceeds the program's wall
time per step, its primitives ran concurrently (TensorFlow's executor does that).
"""

from __future__ import annotations

import argparse
import collections


def parse(path: str, steps: int) -> dict[tuple[str, str, str, str], float]:
    """ms per step by (primitive, implementation, pass, shape) of the exec lines after MARK."""
    totals: dict = collections.Counter()
    counting = False
    with open(path, errors="replace") as log:
        for line in log:
            if line.startswith("MARK"):
                counting = True
            elif counting and line.startswith("onednn_verbose") and ",exec," in line:
                fields = line.strip().split(",")
                at = fields.index("exec")
                primitive, impl, pass_ = fields[at + 2 : at + 5]
                totals[(primitive, impl, pass_, fields[-2])] += float(fields[-1]) / steps
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--steps", type=int, required=True, help="steps after the MARK line")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    totals = parse(args.log, args.steps)
    by_pass = collections.Counter()
    for (primitive, _, pass_, _), ms in totals.items():
        by_pass[(primitive, pass_)] += ms
    for (primitive, pass_), ms in by_pass.most_common():
        print(f"{ms:9.1f} ms  {primitive} {pass_}")
    print(f"{sum(by_pass.values()):9.1f} ms  in all, per step")
    for (primitive, impl, pass_, shape), ms in totals.most_common(args.top):
        print(f"{ms:9.1f} ms  {primitive} {pass_} {impl} {shape}")


if __name__ == "__main__":
    main()
