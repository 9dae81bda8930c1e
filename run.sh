#!/usr/bin/env bash
# Set-up and entry points for a fresh machine.
#   bash run.sh job    install into .venv, pretrain on the embedded synthetic data, print evaluation
#   bash run.sh test   install into .venv (test and beam extras) and run the whole test suite
#   bash run.sh test-onednn  add the cpu-onednn extra, build the oneDNN convolution extension and
#                      run the test files of the oneDNN path (conv_impl="onednn", "auto")
#   bash run.sh lint   ruff lint and format checks
# VENV=path overrides the virtual environment's location.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

# ensure_venv [EXTRAS]: the package with the test extra (and EXTRAS, e.g. ",beam").
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test${1:-}]"
}

case "${1:-}" in
  job)
    ensure_venv
    shift
    "$VENV/bin/python" train.py --config=configs/default.py --workdir="${WORKDIR:-runs/default}" "$@"
    ;;
  test)
    # Beam too, so that the Beam tests of `pclr prepare` run (about 50 s and 210 MB more).
    ensure_venv ",beam"
    shift
    set +e
    # loadfile: a module's tests share one worker, so a module-scoped run is made once.
    XLA_FLAGS=--xla_force_host_platform_device_count=8 "$VENV/bin/python" -m pytest -n 2 --dist loadfile -q tests "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "pytest collected no tests: failing" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  test-onednn)
    # The oneDNN convolution path (docs/speed_cpu.md#the-onednn-path): the extra (about 40 MB),
    # the extension compiled once into its cache (seconds; fails here if it cannot be built),
    # then the files that test it against XLA and the choice of "auto". PCLR_REQUIRE_ONEDNN makes
    # tests/test_onednn_conv.py fail instead of skipping where the extension does not load.
    ensure_venv ",cpu-onednn"
    shift
    "$VENV/bin/python" -m pclr_jax.model.onednn_build
    PCLR_REQUIRE_ONEDNN=1 XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      "$VENV/bin/python" -m pytest -n 2 --dist loadfile -q tests/test_onednn_conv.py \
      tests/test_onednn_build.py tests/test_conv_impl.py tests/test_train_step.py "$@"
    ;;
  lint)
    ensure_venv
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    ;;
  *)
    echo "usage: bash run.sh job|test|test-onednn|lint" >&2
    exit 2
    ;;
esac
