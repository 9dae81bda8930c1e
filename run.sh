#!/usr/bin/env bash
# Set-up and entry points for a fresh machine.
#   bash run.sh job    install into .venv, pretrain on the embedded synthetic data, print evaluation
#   bash run.sh test   install into .venv (test and beam extras) and run the whole test suite
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
  lint)
    ensure_venv
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    ;;
  *)
    echo "usage: bash run.sh job|test|lint" >&2
    exit 2
    ;;
esac
