#!/usr/bin/env bash
# Closing the gap to Faster R-CNN (issue 25, section 2): candidate leaf configs on top of the full
# model, BCCD train -> val, 780 iterations, bf16 + channels-last, one thread per run, paired by seed
# against the full model. Resumable (finished runs are skipped).
#
#   TASKS="retinanet_R_18_full_GIOU_cpu:0" bash studies/gap/gap.sh   # some runs
#   bash studies/gap/gap.sh                                         # every planned run
#   REPORT=1 bash studies/gap/gap.sh                                # only the page
#
# Settings (environment): OUT (runs root, default output/gap), PY, THREADS, PRECISION.
# The full model's seeds are the budget study's 780-iteration runs (same protocol): link them with
#   ln -s ../../budget_780/runs/retinanet_R_18_full_cpu OUT/runs/retinanet_R_18_full_cpu
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/gap}
THREADS=${THREADS:-1}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
C=configs/cpu
FULL=retinanet_R_18_full_cpu
CONFIGS=$("$PY" -c "import yaml; print(' '.join(c if isinstance(c, str) else c['name'] for c in yaml.safe_load(open('studies/gap/study.yaml'))['configs']))")
common=(--reference-config "$C/$FULL.yaml" --train-dataset bccd_train --test-dataset bccd_val
        --num-classes 3 --output "$OUT" --threads "$THREADS" --max-iter 780)
if [[ -n "${REPORT:-}" ]]; then
  cfgs=()
  for c in $CONFIGS; do cfgs+=("$C/$c.yaml"); done
  "$PY" -m studies.ablation.ablation --configs "${cfgs[@]}" "${common[@]}" --seeds 0 1 2 \
    --no-run --manifest studies/gap/study.yaml \
    --title "Closing the gap to Faster R-CNN: candidates on the full model" \
    --report docs/results/gap/RESULTS_gap.md
  exit 0
fi
if [[ -z "${TASKS:-}" ]]; then
  TASKS=""
  for s in 0 1 2; do for c in $CONFIGS; do TASKS+=" $c:$s"; done; done
fi
for task in $TASKS; do
  IFS=: read -r name seed <<< "$task"
  # shellcheck disable=SC2086
  "$PY" -m studies.ablation.ablation --configs "$C/$name.yaml" --seeds "$seed" "${common[@]}" \
    SOLVER.CHECKPOINT_PERIOD 100 $PRECISION < /dev/null || true
done
