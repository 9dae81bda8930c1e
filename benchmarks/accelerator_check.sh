#!/usr/bin/env bash
# One-shot accelerator check of pclr-jax: on a machine with a GPU or TPU, sized for ~8 minutes.
#
#   bash benchmarks/accelerator_check.sh              # writes accelerator_check/accelerator_check.{json,md}
#
# What it runs (pclr_jax/benchmarking/accelerator_check.py, docs/benchmarks.md): the device and
# XLA's matmul peak; the step and loss equivalence tests ON the device (PCLR_TEST_DEVICE=1);
# the largest training batch that fits (XLA's memory plan); pclr bench train in bf16 and fp32 at
# two per-device batch sizes and pclr bench embed, with the PyTorch peer on the same device when
# an interpreter with a CUDA torch is found (PCLR_PEER_PYTHON_TORCH, else this one); fraction of
# the device's published bf16 peak; peak device memory.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), OUT (default
# accelerator_check), PCLR_CHECK_TINY=1 for test sizes (runs on the CPU too: the suite does),
# PCLR_PEER_PYTHON_TORCH. Exit status 1 if a step failed; the summary is written in any case.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m pclr_jax.benchmarking.accelerator_check --out "${OUT:-accelerator_check}" "$@"
