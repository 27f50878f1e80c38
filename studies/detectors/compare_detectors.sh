#!/usr/bin/env bash
# One- vs two-stage detectors (the thesis' chapter 3): Faster R-CNN, FCOS, detectron2's RetinaNet
# and the full model on BCCD trainval -> test, 780 iterations, seeds 0 1, one table + AP-vs-latency
# plot in docs/results/detectors/RESULTS_detectors.md. Resumable like the model selection (finished runs are
# skipped, interrupted ones continue from their last checkpoint).
#
#   bash studies/detectors/compare_detectors.sh             # train what is missing, then report
#   TASKS="fcos_R_18_FPN_cpu:0" bash studies/detectors/compare_detectors.sh   # one lane's runs only
#   REPORT=1 bash studies/detectors/compare_detectors.sh    # only the report (+ interleaved latency,
#                                                 # timed once; RETIME=1 times again)
#
# Settings (environment): OUT, SEEDS, THREADS, PY, PRECISION, FULL (the full model's config).
# Other data or configs: call the tool itself (studies/detectors/compare_detectors.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/compare_detectors}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
SEEDS=${SEEDS:-0 1}
THREADS=${THREADS:-1}
FULL=${FULL:-configs/cpu/retinanet_R_18_full_cpu.yaml}
# the tool's command line (python -m studies.detectors.compare_detectors --help)
# shellcheck disable=SC2206
ARGS=(--train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3 --seeds $SEEDS
      --output "$OUT" --threads "$THREADS" --full "$FULL")
# shellcheck disable=SC2086
OPTS=(SOLVER.CHECKPOINT_PERIOD 100 $PRECISION)
if [[ -n "${TASKS:-}" ]]; then
  # shellcheck disable=SC2086
  "$PY" -m studies.detectors.compare_detectors --tasks $TASKS "${ARGS[@]}" "${OPTS[@]}" || true
  exit 0
fi
RUN=()
[[ -n "${REPORT:-}" ]] && RUN=(--no-run --reuse-latency)  # RETIME=1: time again anyway
[[ -n "${REPORT:-}" && -n "${RETIME:-}" ]] && RUN=(--no-run)
"$PY" -m studies.detectors.compare_detectors "${ARGS[@]}" "${RUN[@]}" \
  --report docs/results/detectors/RESULTS_detectors.md --notes studies/detectors/notes.md \
  --manifest studies/detectors/study.yaml "${OPTS[@]}"
