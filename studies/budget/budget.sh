#!/usr/bin/env bash
# Accuracy against training budget (issue 25, section 1): the four detectors of the detectors page
# on BCCD train -> val at 780, 1560 and 2340 iterations (schedule scaled: LR steps at 75 % / 90 %),
# seeds 0-2, bf16 + channels-last, one thread per run. Resumable: finished runs are skipped, an
# interrupted one continues from its last checkpoint.
#
#   TASKS="780:retinanet_R_18_full_cpu:0 2340:faster_rcnn_R_18_FPN_cpu:0" bash studies/budget/budget.sh
#   bash studies/budget/budget.sh        # every planned run, in the manifest's order
#   REPORT=1 bash studies/budget/budget.sh   # only the page, from the runs that exist
#
# Settings (environment): OUT (runs root, default output/budget), PY, PRECISION, THREADS.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/budget}
THREADS=${THREADS:-1}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
if [[ -n "${REPORT:-}" ]]; then
  "$PY" -m studies.budget.budget --runs "$OUT" --output docs/results/budget/RESULTS_budget.md
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
