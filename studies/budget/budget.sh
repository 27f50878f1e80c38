#!/usr/bin/env bash
# Accuracy against training budget (issue 25, section 1): the four detectors of the detectors page
# on BCCD train -> val at 780, 1560 and 2340 iterations (schedule scaled: LR steps at 75 % / 90 %),
# seeds 0-2, bf16 + channels-last, one thread per run. Resumable: finished runs are skipped, an
# interrupted one continues from its last checkpoint.
#
#   TASKS="780:retinanet_R_18_full_cpu:0 2340:faster_rcnn_R_18_FPN_cpu:0" bash studies/budget/budget.sh
#   bash studies/budget/budget.sh        # every planned run, in the manifest's order
#   REPORT=1 bash studies/budget/budget.sh   # only the page, from the runs that exist
#   LATENCY=1 bash studies/budget/budget.sh  # the detectors' batch-1 latency side by side (quiet
#                                            # machine; the page then reads the verdict's ratio)
#
# Settings (environment): OUT (runs root, default output/budget), PY, PRECISION, THREADS.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/budget}
THREADS=${THREADS:-1}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
LATENCY_DIR="$OUT/budget_latency"
if [[ -n "${LATENCY:-}" ]]; then
  # The four detectors' 780-iteration seed-0 weights side by side in one process, one thread.
  cfgs=() weights=()
  for c in d2_retinanet_R_18_FPN_cpu faster_rcnn_R_18_FPN_cpu fcos_R_18_FPN_cpu retinanet_R_18_full_cpu; do
    f=configs/cpu/$c.yaml; [[ -f $f ]] || f=configs/cpu/compare/$c.yaml
    cfgs+=("$f"); weights+=("$OUT/budget_780/runs/$c/seed0/model_final.pth")
  done
  # shellcheck disable=SC2086
  "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "${cfgs[@]}" --weights "${weights[@]}" \
    --reference faster_rcnn_R_18_FPN_cpu --dataset bccd_val --threads 1 --rounds 4 \
    --output "$LATENCY_DIR" MODEL.DEVICE cpu $PRECISION \
    MODEL.RETINANET.NUM_CLASSES 3 MODEL.ROI_HEADS.NUM_CLASSES 3
  exit 0
fi
if [[ -n "${REPORT:-}" ]]; then
  lat=(); [[ -f "$LATENCY_DIR/latency.json" ]] && lat=(--latency "$LATENCY_DIR/latency.json")
  "$PY" -m studies.budget.budget --runs "$OUT" --output docs/results/budget/RESULTS_budget.md \
    --index docs/results/index.md "${lat[@]}"
  exit 0
fi
if [[ -z "${TASKS:-}" ]]; then
  TASKS=$("$PY" -m studies.budget.budget --list-tasks)
fi
for task in $TASKS; do
  IFS=: read -r budget name seed <<< "$task"
  # shellcheck disable=SC2086
  "$PY" -m studies.detectors.compare_detectors --tasks "$name:$seed" \
    --train-dataset bccd_train --test-dataset bccd_val --num-classes 3 --seeds "$seed" \
    --output "$OUT/budget_$budget" --max-iter "$budget" --threads "$THREADS" \
    SOLVER.CHECKPOINT_PERIOD 100 $PRECISION < /dev/null || true
done
