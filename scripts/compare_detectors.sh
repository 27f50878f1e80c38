#!/usr/bin/env bash
# One- vs two-stage detectors (the thesis' chapter 3): Faster R-CNN, FCOS, detectron2's RetinaNet
# and the full model on BCCD trainval -> test, 780 iterations, seeds 0 1, one table + AP-vs-latency
# plot in docs/RESULTS_detectors.md. Resumable like the model selection (finished runs are
# skipped, interrupted ones continue from their last checkpoint).
#
#   bash scripts/compare_detectors.sh             # train what is missing, then report
#   TASKS="fcos_R_18_FPN_cpu:0" bash scripts/compare_detectors.sh   # one lane's runs only
#   REPORT=1 bash scripts/compare_detectors.sh    # only the report (+ interleaved latency)
#
# Settings (environment): OUT, SEEDS, THREADS, PY, PRECISION, FULL (the full model's config).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/compare_detectors}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
SEEDS=${SEEDS:-0 1}
THREADS=${THREADS:-1}
FULL=${FULL:-configs/cpu/retinanet_R_18_full_cpu.yaml}
C=configs/cpu
CONFIGS=("$C/d2_retinanet_R_18_FPN_cpu.yaml" "$C/compare/faster_rcnn_R_18_FPN_cpu.yaml"
         "$C/compare/fcos_R_18_FPN_cpu.yaml" "$FULL")
DATA=(--train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3)
config_path() {
  for c in "${CONFIGS[@]}"; do [[ $(basename "$c" .yaml) == "$1" ]] && echo "$c"; done
}
train() {
  # shellcheck disable=SC2086
  "$PY" -m bmc_detectron.tools.ablation --configs "$1" "${DATA[@]}" --seeds "$2" \
    --output "$OUT" --threads "$THREADS" SOLVER.CHECKPOINT_PERIOD 100 $PRECISION || true
}
if [[ -n "${TASKS:-}" ]]; then
  for task in $TASKS; do train "$(config_path "${task%%:*}")" "${task##*:}"; done
  exit 0
fi
if [[ -z "${REPORT:-}" ]]; then
  for seed in $SEEDS; do for c in "${CONFIGS[@]}"; do train "$c" "$seed"; done; done
fi
# batch-1 latency of the four, side by side in one process (interleaved rounds), 2 threads
# shellcheck disable=SC2086
"$PY" -m bmc_detectron.tools.benchmark --configs "${CONFIGS[@]}" \
  --reference d2_retinanet_R_18_FPN_cpu --dataset bccd_test --threads 2 \
  --output "$OUT/latency" MODEL.RETINANET.NUM_CLASSES 3 MODEL.ROI_HEADS.NUM_CLASSES 3 $PRECISION
# shellcheck disable=SC2086
"$PY" -m bmc_detectron.tools.ablation --configs "${CONFIGS[@]}" "${DATA[@]}" --seeds $SEEDS \
  --output "$OUT" --no-run --report docs/RESULTS_detectors.md --notes docs/detectors_notes.md \
  --extra "$OUT/latency/latency.md" --full "$(basename "$FULL" .yaml)"
