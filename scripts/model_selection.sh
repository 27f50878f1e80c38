#!/usr/bin/env bash
# Model selection on BCCD train -> val at the 780-iteration CPU schedule (the BASELINES protocol),
# paired by seed. Resumable at two levels: a finished run (its coco_metrics.json exists) is
# skipped, an interrupted one continues from its last checkpoint.
#
#   LANE=0 bash scripts/model_selection.sh &   # two lanes share the task list, one thread each
#   LANE=1 bash scripts/model_selection.sh &
#
# Settings (environment): OUT (run folder), SEEDS, THREADS, LANES, LANE, PY.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/select_bccd}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-1}
LANES=${LANES:-2}
LANE=${LANE:-0}
C=configs/cpu
CONFIGS=(
  "$C/d2_retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_cpu.yaml" "$C/retinanet_R_18_PAN_PAA_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_PAA_cpu.yaml" "$C/retinanet_R_18_PAN_SE_OTA_cpu.yaml"
)
i=0
for seed in $SEEDS; do
  for cfg in "${CONFIGS[@]}"; do
    if (( i % LANES == LANE )); then
      "$PY" -m bmc_detectron.tools.ablation --configs "$cfg" --train-dataset bccd_train \
        --test-dataset bccd_val --num-classes 3 --seeds "$seed" --output "$OUT" \
        --threads "$THREADS" SOLVER.CHECKPOINT_PERIOD 100 || true
    fi
    i=$((i + 1))
  done
done
