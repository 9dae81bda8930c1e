#!/usr/bin/env bash
# The PCLR reproduction: PCLR embeddings in linear probes against a randomly initialised encoder
# and against the same network trained from scratch on the labels, across training-set sizes
# (docs/reproduction.md).
#
#   bash scripts/reproduce.sh synthetic    # pclr_synthetic/cpu_default: age, sex, AF, LVH
#   PTBXL_DIR=/path/to/ptbxl bash scripts/reproduce.sh ptbxl
#                                          # PTB-XL folds 1-8 / 9 / 10: age, sex, AF, LVH,
#                                          # superclasses, and all 71 statements on all labels
#
# PTBXL_DIR holds ptbxl_database.csv (or ptbxl_patient_map.csv) and records100/ (only needed
# while the data set is not yet prepared). Each step is skipped when its output exists, so an
# interrupted run continues where it stopped. Environment knobs (defaults in brackets):
#   DATA_DIR [data/tfds]   prepared data sets     OUT [runs/repro_<dataset>]  probe outputs
#   REPEATS [5 synthetic, 3 ptbxl]  linear-probe repeats at 100-5,000 labels
#   SCRATCH_REPEATS [2 synthetic, 1 ptbxl], SCRATCH_SIZES [100,250,500,1000]: the supervised
#   baseline, which costs minutes per fit on a CPU (SUP_EPOCHS [10], SUP_PATIENCE [3]).
# The seconds each step took are appended to $OUT/timings.tsv; the tables and figures are
# written by scripts/repro_report.py into $OUT/report.md and docs/figures/.
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET=${1:?usage: scripts/reproduce.sh synthetic|ptbxl}
DATA_DIR=${DATA_DIR:-data/tfds}
OUT=${OUT:-runs/repro_${DATASET}}
SCRATCH_SIZES=${SCRATCH_SIZES:-100,250,500,1000}
SUP_EPOCHS=${SUP_EPOCHS:-10}
SUP_PATIENCE=${SUP_PATIENCE:-3}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"

timed() {  # timed NAME OUTPUT_MARKER COMMAND...: runs COMMAND unless OUTPUT_MARKER exists
  local name=$1 marker=$2
  shift 2
  if [ -e "$marker" ]; then
    echo "== $name: $marker exists, skipped" >&2
    return
  fi
  echo "== $name: $*" >&2
  local start=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  # The interpreter is recorded by name only: timings.tsv is published with the reports.
  local command="$*"
  printf '%s\t%d\t%s\n' "$name" "$((SECONDS - start))" "${command/#"$PYTHON"/python}" \
    >>"$OUT/timings.tsv"
}

case "$DATASET" in
  synthetic)
    REPEATS=${REPEATS:-5}
    SCRATCH_REPEATS=${SCRATCH_REPEATS:-2}
    # The reproduction's synthetic set is cpu_default (docs/reproduction.md); the default job
    # (runs/default) trains on cpu_calibrated, so the reproduction pretrains in its own workdir.
    WORKDIR=${WORKDIR:-$OUT/pretrain}
    DATA=(--data pclr_synthetic --data-config cpu_default --data-dir "$DATA_DIR"
      --split train --test-split test)
    TASKS=(--task sex:binary --task age:regression --task af:binary --task lvh:binary)
    timed pretrain "$WORKDIR/encoder" \
      "$PYTHON" train.py --config=configs/default.py --workdir="$WORKDIR" \
      --config.data.data_dir="$DATA_DIR" --config.data.config=cpu_default
    timed probe_linear "$OUT/linear/results.csv" \
      pclr probe --weights pclr="$WORKDIR/encoder" "${DATA[@]}" "${TASKS[@]}" \
      --sizes 100,250,500,1000,2500,5000,all --repeats "$REPEATS" \
      --baseline random_init --retrieval --out "$OUT/linear"
    ;;
  ptbxl)
    REPEATS=${REPEATS:-3}
    SCRATCH_REPEATS=${SCRATCH_REPEATS:-1}
    WORKDIR=${WORKDIR:-runs/ptbxl_cpu}
    DATA=(--data ptbxl --data-config cpu --data-dir "$DATA_DIR" --split train --test-split test)
    TASKS=(--task sex:binary --task age:regression --task af:binary --task lvh:binary
      --task superclass:multilabel)
    if [ ! -d "$DATA_DIR/ptbxl/cpu" ]; then
      timed prepare "$DATA_DIR/ptbxl/cpu" \
        pclr prepare ptbxl --manual-dir "${PTBXL_DIR:?set PTBXL_DIR}" --data-dir "$DATA_DIR" \
        --config cpu
    fi
    timed pretrain "$WORKDIR/encoder" \
      "$PYTHON" train.py --config=configs/ptbxl_cpu.py --workdir="$WORKDIR" \
      --config.data.data_dir="$DATA_DIR"
    # Label-efficiency curves at 100-5,000 labels, repeated draws from folds 1-8.
    timed probe_linear "$OUT/linear/results.csv" \
      pclr probe --weights pclr="$WORKDIR/encoder" "${DATA[@]}" "${TASKS[@]}" \
      --sizes 100,250,500,1000,2500,5000 --repeats "$REPEATS" \
      --baseline random_init --retrieval --out "$OUT/linear"
    # Every fold 1-8 label (one fit on the whole pool) ...
    timed probe_all "$OUT/all/results.csv" \
      pclr probe --weights pclr="$WORKDIR/encoder" "${DATA[@]}" "${TASKS[@]}" \
      --sizes all --repeats 1 --baseline random_init --out "$OUT/all"
    # ... and PTB-XL's 71 SCP statements, the PTB-XL benchmark's "all statements" task (71
    # one-vs-rest probes on 17,416 ECGs), with the randomly initialised encoder beside PCLR (the
    # same probe on the same folds: a random encoder with a linear probe is the floor any
    # pretraining must clear).
    timed statements_csv "$OUT/all_statements.csv" \
      "$PYTHON" scripts/ptbxl_statements.py --data-dir "$DATA_DIR" --config cpu \
      --out "$OUT/all_statements.csv"
    timed probe_statements "$OUT/statements/results.csv" \
      pclr probe --weights pclr="$WORKDIR/encoder" "${DATA[@]}" \
      --labels "$OUT/all_statements.csv" --task all_statements:multilabel \
      --sizes all --repeats 1 --baseline random_init --out "$OUT/statements"
    ;;
  *)
    echo "unknown data set $DATASET (synthetic|ptbxl)" >&2
    exit 2
    ;;
esac

# The same network trained from scratch, supervised, on the same training rows (the probe's
# draws depend on the seed and the repeat only, so these rows are those of the linear probes).
timed probe_scratch "$OUT/scratch/results.csv" \
  pclr probe --weights pclr="$WORKDIR/encoder" "${DATA[@]}" "${TASKS[@]}" \
  --sizes "$SCRATCH_SIZES" --repeats "$SCRATCH_REPEATS" --baseline scratch \
  --sup-epochs "$SUP_EPOCHS" --sup-patience "$SUP_PATIENCE" --out "$OUT/scratch"

"$PYTHON" scripts/repro_report.py "$OUT" --name "$DATASET" --figures docs/figures
