#!/usr/bin/env bash
# Runs a study cell by cell, resumably, and commits each finished cell's files as it comes.
#
#   scripts/run_study.sh CONFIG [--set FIELD=VALUE ...]
#
# e.g. in the background, surviving the end of the session (stop it with kill PID: the cell in
# progress saves a checkpoint and stops; run the same command again to continue):
#
#   nohup scripts/run_study.sh configs/studies/loss_variants_full.py > runs/loss_variants_full.log 2>&1 &
#
# For each (arm, seed) cell, seed-major (every arm at seed 0, then its untrained baseline cell
# random_init, then seed 1, ...), it runs
# `pclr study run --arm A --seed S --no-report` in WORKDIR, then copies study.json and every
# cell's config.json, result.json, failed.json and items.npz to PUBLISH (the study folder to
# publish) and commits them there. Finished cells are skipped; an interrupted cell resumes from
# its last checkpoint on exactly the next batch; a cell that failed is committed with its
# failed.json and the next cell runs. When WORKDIR is gone (a new machine) but PUBLISH holds the
# study, WORKDIR is restored from PUBLISH first, so the committed cells are not run again.
#
# When every cell has finished it writes the full report into PUBLISH (`pclr study report
# WORKDIR --publish PUBLISH`) and commits it if tests/test_study_summaries.py passes, i.e. if
# README.md already quotes the study's summary block; otherwise it leaves the report uncommitted
# and says what to copy (docs/studies.md, "Summaries"). Until then PUBLISH holds no results.csv or
# summary.md, so a study in progress never fails that test; WORKDIR/report.md has the interim
# report (`pclr study report WORKDIR` at any time).
#
# Environment: WORKDIR (default runs/NAME, NAME the config file's stem), PUBLISH (default
# docs/studies/NAME), PYTHON (default .venv/bin/python, else python), STUDY_COMMIT=0 (copy, do
# not commit). Commits go to the branch checked out here and name only PUBLISH's paths (other
# staged changes stay staged); a dedicated worktree keeps them apart from other work:
#   git worktree add ../pclr-study -b study-run && cd ../pclr-study && nohup scripts/run_study.sh ...
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
CONFIG=$1
shift
SETS=()
while [ $# -gt 0 ]; do
  case $1 in
    --set) SETS+=("--set=$2"); shift 2 ;;
    --set=*) SETS+=("$1"); shift ;;
    *) echo "unknown argument $1 (expected --set FIELD=VALUE)" >&2; exit 2 ;;
  esac
done
NAME=$(basename "${CONFIG%%:*}" .py)
WORKDIR=${WORKDIR:-runs/$NAME}
PUBLISH=${PUBLISH:-docs/studies/$NAME}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's pclr_jax
PCLR=("$PYTHON" -m pclr_jax.commands.cli)

log() { echo "[$(date -u '+%Y-%m-%d %H:%M:%S') UTC] $*"; }

mkdir -p "$WORKDIR"
exec 9> "$WORKDIR/.run_study.lock"
if ! flock -n 9; then
  echo "another run_study.sh holds $WORKDIR" >&2
  exit 1
fi

if [ ! -f "$WORKDIR/study.json" ] && [ -f "$PUBLISH/study.json" ]; then
  log "restoring $WORKDIR from $PUBLISH (its committed cells are not run again)"
  cp "$PUBLISH/study.json" "$WORKDIR/study.json"
  if [ -d "$PUBLISH/cells" ]; then cp -r "$PUBLISH/cells" "$WORKDIR/"; fi
fi

# The cells in the runner's order, validated as `pclr study run` will (a typo fails here).
mapfile -t CELLS < <("$PYTHON" - "$CONFIG" "${SETS[@]}" <<'EOF'
import sys

from pclr_jax.study.cell import BASELINE_ARM
from pclr_jax.study.spec import load_study

spec = load_study(sys.argv[1], [s.removeprefix("--set=") for s in sys.argv[2:]])
for arm, seed in spec.run_order(BASELINE_ARM):
    print(arm, seed)
EOF
)

publish_cells() {
  "$PYTHON" - "$WORKDIR" "$PUBLISH" <<'EOF'
import pathlib
import sys

from pclr_jax.study.report import publish_cells

out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
publish_cells(pathlib.Path(sys.argv[1]), out)
EOF
}

commit() {  # commit PUBLISH's files with message $1; a failed commit is reported, not fatal
  [ "${STUDY_COMMIT:-1}" = 0 ] && return 0
  git add -- "$PUBLISH" || { log "git add failed: not committed"; return 0; }
  if git diff --cached --quiet -- "$PUBLISH"; then return 0; fi
  git commit -q -m "$1" -- "$PUBLISH" || log "git commit failed: $PUBLISH not committed"
}

child=
trap '[ -n "$child" ] && kill -TERM "$child" 2> /dev/null' TERM INT
total=${#CELLS[@]}
number=0
for entry in "${CELLS[@]}"; do
  read -r arm seed <<< "$entry"
  number=$((number + 1))
  cell="$WORKDIR/cells/$arm/seed_$seed"
  if [ -f "$cell/result.json" ] || [ -f "$cell/failed.json" ]; then
    continue
  fi
  log "[$number/$total] $arm seed $seed"
  status=0
  # In the background so that a TERM or INT to this script reaches the cell, which then saves a
  # checkpoint and stops (resumed by the next run).
  "${PCLR[@]}" study run --config "$CONFIG" --workdir "$WORKDIR" "${SETS[@]}" \
    --arm "$arm" --seed "$seed" --no-report &
  child=$!
  while kill -0 "$child" 2> /dev/null; do wait "$child" || status=$?; done
  child=
  if [ -f "$cell/result.json" ]; then
    what="finished"
  elif [ -f "$cell/failed.json" ]; then
    what="failed (failed.json)"
  else
    log "$arm seed $seed stopped (exit $status): run the same command to resume"
    exit 1
  fi
  log "$arm seed $seed $what"
  publish_cells
  commit "Study $NAME: cell $arm seed $seed $what ($number of $total)"
done

missing=0
for entry in "${CELLS[@]}"; do
  read -r arm seed <<< "$entry"
  [ -f "$WORKDIR/cells/$arm/seed_$seed/result.json" ] || missing=$((missing + 1))
done
log "every cell ran ($missing of $total without a result); writing the report into $PUBLISH"
"${PCLR[@]}" study report "$WORKDIR" --publish "$PUBLISH" > /dev/null
if [ "${STUDY_COMMIT:-1}" = 0 ]; then
  exit 0
fi
if "$PYTHON" -m pytest -q -p no:xdist -p no:cacheprovider tests/test_study_summaries.py > /dev/null; then
  commit "Study $NAME: report of $total cells ($missing without a result)"
  log "report committed"
else
  log "report written to $PUBLISH but NOT committed: README.md must quote its summary block."
  log "Copy <!-- study-summary:$NAME --> ... <!-- /study-summary --> of $PUBLISH/summary.md"
  log "into README.md (docs/studies.md, 'Summaries'), then commit $PUBLISH and README.md."
fi
