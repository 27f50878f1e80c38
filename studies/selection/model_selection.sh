#!/usr/bin/env bash
# Model selection on BCCD train -> val at the 780-iteration CPU schedule (the BASELINES protocol),
# paired by seed. Resumable at two levels: a finished run (its coco_metrics.json exists) is
# skipped, an interrupted one continues from its last checkpoint.
#
#   LANE=0 bash studies/selection/model_selection.sh &   # two lanes share the task list, one thread each
#   LANE=1 bash studies/selection/model_selection.sh &
#
# Runs train with the CPU mixed-precision path (bf16 network body + channels-last, measured ~2x
# faster per iteration); PRECISION="" trains in float32.
#
# Settings (environment): OUT (run folder), SEEDS, THREADS, LANES, LANE, PY, PRECISION, CONFIGS,
# TASKS ("config:seed config:seed ...": this lane runs exactly these, in this order, to put the
# runs that decide a question first), REPORT=1 (train nothing: regenerate
# docs/results/selection/RESULTS_selection.md from the finished runs, with studies/selection/notes.md as its notes),
# COST=1 (time the reference, PAN + SE and the thesis' P2 neck side by side: $OUT/cost/latency.md,
# included in the page), PARITY=1 (train nothing: docs/results/precision/RESULTS_precision_runs.md, PAN seed 0 trained
# in float32 into FP32_OUT (default output/select_bccd) against its bf16 run, after
# `PRECISION= OUT=output/select_bccd TASKS="retinanet_R_18_PAN_cpu:0" bash studies/selection/model_selection.sh`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/select_bccd_bf16}
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-1}
LANES=${LANES:-2}
LANE=${LANE:-0}
C=configs/cpu
DEFAULT_CONFIGS="d2_retinanet_R_18_FPN_cpu retinanet_R_18_PAN_cpu retinanet_R_18_PAN_SE_cpu
  retinanet_R_18_PAN_SE_GATE3_cpu retinanet_R_18_PAN_PAA_cpu retinanet_R_18_PAN_SE_PAA_cpu
  retinanet_R_18_PAN_SE_GATE3_PAA_cpu retinanet_R_18_PAN_SE_P2_cpu retinanet_R_18_PAN_SE_OTA_cpu
  retinanet_R_18_PAN_SE_DCN_cpu retinanet_R_18_PAN_SE_GATE3_PAA_P2_cpu"
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}
run_one() {
  # shellcheck disable=SC2086
  "$PY" -m studies.ablation.ablation --configs "$C/$1.yaml" --train-dataset bccd_train \
    --test-dataset bccd_val --num-classes 3 --seeds "$2" --output "$OUT" \
    --threads "$THREADS" SOLVER.CHECKPOINT_PERIOD 100 $PRECISION || true
}
if [[ -n "${COST:-}" ]]; then
  # shellcheck disable=SC2086
  "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "$C/d2_retinanet_R_18_FPN_cpu.yaml" \
    "$C/retinanet_R_18_PAN_SE_cpu.yaml" "$C/retinanet_R_18_PAN_SE_P2_cpu.yaml" \
    --reference d2_retinanet_R_18_FPN_cpu --dataset bccd_val --threads 1 --num-images 8 \
    --rounds 3 --output "$OUT/cost" MODEL.RETINANET.NUM_CLASSES 3 $PRECISION
  exit 0
fi
if [[ -n "${PARITY:-}" ]]; then
  P=retinanet_R_18_PAN_cpu
  seeds=()
  for s in 1 2; do
    [[ -d "$OUT/runs/$P/seed$s/inference" ]] && seeds+=("bf16 s$s=$OUT/runs/$P/seed$s")
  done
  notes=()
  [[ -f studies/precision/runs_notes.md ]] && notes=(--notes studies/precision/runs_notes.md)
  "$PY" -m studies.precision.precision_runs --dataset bccd_val \
    --runs "float32 s0=${FP32_OUT:-output/select_bccd}/runs/$P/seed0" "bf16 s0=$OUT/runs/$P/seed0" \
    --seed-runs "${seeds[@]}" "${notes[@]}" --output docs/results/precision/RESULTS_precision_runs.md
  exit 0
fi
if [[ -n "${REPORT:-}" ]]; then
  S=retinanet_R_18_PAN_SE_cpu
  extra=()
  [[ -f "$OUT/cost/latency.md" ]] && extra=(--extra "$OUT/cost/latency.md")
  paths=()
  for name in $CONFIGS; do paths+=("$C/$name.yaml"); done
  # shellcheck disable=SC2086
  "$PY" -m studies.ablation.ablation --configs "${paths[@]}" --train-dataset bccd_train \
    --test-dataset bccd_val --num-classes 3 --seeds $SEEDS --output "$OUT" --no-run \
    --report docs/results/selection/RESULTS_selection.md --notes studies/selection/notes.md "${extra[@]}" \
    --manifest studies/selection/study.yaml \
    --title "Model selection on BCCD val (train -> val, 780 iterations, paired by seed)" \
    --full retinanet_R_18_PAN_SE_GATE3_PAA_cpu \
    --parent retinanet_R_18_PAN_cpu=d2_retinanet_R_18_FPN_cpu "$S=retinanet_R_18_PAN_cpu" \
    "retinanet_R_18_PAN_SE_GATE3_cpu=$S" retinanet_R_18_PAN_PAA_cpu=retinanet_R_18_PAN_cpu \
    "retinanet_R_18_PAN_SE_PAA_cpu=$S" "retinanet_R_18_PAN_SE_P2_cpu=$S" \
    retinanet_R_18_PAN_SE_GATE3_PAA_cpu=retinanet_R_18_PAN_PAA_cpu \
    "retinanet_R_18_PAN_SE_OTA_cpu=$S" "retinanet_R_18_PAN_SE_DCN_cpu=$S" \
    retinanet_R_18_PAN_SE_GATE3_PAA_P2_cpu=retinanet_R_18_PAN_SE_GATE3_PAA_cpu
  exit 0
fi
if [[ -n "${TASKS:-}" ]]; then
  for task in $TASKS; do
    run_one "${task%%:*}" "${task##*:}"
  done
  exit 0
fi
i=0
for seed in $SEEDS; do
  for name in $CONFIGS; do
    if (( i % LANES == LANE )); then
      run_one "$name" "$seed"
    fi
    i=$((i + 1))
  done
done
