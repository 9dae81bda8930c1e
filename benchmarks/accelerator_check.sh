#!/usr/bin/env bash
# One-shot accelerator check of pclr-jax, the first command to run on a machine with a GPU or TPU:
# at most about 8 minutes on one H100 (estimate and stages: docs/benchmarks.md#accelerators).
#
#   INSTALL=1 bash benchmarks/accelerator_check.sh   # on a fresh machine: .venv with .[cuda,test]
#   bash benchmarks/accelerator_check.sh             # writes accelerator_check/accelerator_check.{json,md}
#   bash benchmarks/accelerator_check.sh --budget-s 900   # options: python -m
#                                                    # pclr_jax.benchmarking.accelerator_check -h
#
# Stages (pclr_jax/benchmarking/accelerator_check.py): device facts and XLA's matmul peaks; the
# equivalence tests marked device_check, ON the device; the training step in bf16 and fp32 at 32
# pairs and at the largest batch that fits; the embedding on inputs made on the device; then,
# if the budget allows, the convolution formulations timed (the conv_impl="auto" entry they call
# for) and PyTorch on the same GPU where an interpreter with a CUDA torch is found
# (PCLR_PEER_PYTHON_TORCH). The summary is rewritten after every stage and every result: a
# machine taken away mid-run leaves the stages done so far.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3); OUT (default
# accelerator_check); INSTALL=1 to create .venv (if absent) and pip install -e ".[$EXTRAS]" first
# (EXTRAS default cuda,test: jax[cuda12] with its CUDA 12 wheels, pytest; needs an NVIDIA driver
# for CUDA 12; on a TPU VM install jax[tpu] by hand and set EXTRAS=test); PCLR_CHECK_TINY=1 for
# test sizes (runs on the CPU too: the suite does). Exit status 1 if a stage failed or timed out,
# a test failed, or JAX found no accelerator; 2 if the interpreter lacks jax or pytest. The summary
# is written in any case.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${INSTALL:-0}" = 1 ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[${EXTRAS:-cuda,test}]"
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import jax, pytest" 2>/dev/null; then
  echo "accelerator_check: $PYTHON cannot import jax and pytest; run with INSTALL=1" \
    "(pip install -e '.[cuda,test]'), or set PYTHON" >&2
  exit 2
fi
# exec: the check is this process (a kill reaches Python itself, not a shell around it).
exec "$PYTHON" -m pclr_jax.benchmarking.accelerator_check --out "${OUT:-accelerator_check}" "$@"
