#!/usr/bin/env bash
# The component ladder: regenerate docs/results/ablation/RESULTS_ablation.md from runs: the BCCD
# ablation (train + evaluate), the side-by-side latency table (benchmark --configs C1 C2 ...), the
# assignment micro-benchmark and one cost row per model (benchmark --configs C), then the page.
#
#   bash studies/ablation/ablation.sh                 # everything (many CPU-hours on 2 cores)
#   PHASE=train bash studies/ablation/ablation.sh     # only the ablation runs (resumable)
#   PHASE=measure bash studies/ablation/ablation.sh   # latency, assignment, cost rows (~15 min, keep quiet)
#   PHASE=report bash studies/ablation/ablation.sh    # only rewrite the page from what exists
#
# The other pages that studies/results.sh used to write have a driver each:
# studies/deploy/deploy.sh, studies/errors/errors.sh, studies/assignment/assignment.sh,
# studies/selection/se_gate.sh, studies/recognition/pbc_count.sh, studies/stages/stages_bccd.sh.
#
# Settings (environment): ITERS (schedule length, scaled from the CPU config's 780), SEEDS,
# THREADS (torch threads per training run), OUT (run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PHASE=${PHASE:-all}
ITERS=${ITERS:-300}
SEEDS=${SEEDS:-0 1}
THREADS=${THREADS:-2}
OUT=${OUT:-output/ablation_bccd}
C=configs/cpu

# The ladder: baseline, +PAN, +attention, each assigner, soft labels, dilation, DCN.
CONFIGS=(
  "$C/retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml" "$C/retinanet_R_18_PAN_SE_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_ATSS_cpu.yaml" "$C/retinanet_R_18_PAN_SE_SIMOTA_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_OTA_cpu.yaml" "$C/retinanet_R_18_PAN_SE_PAA_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_DYNAMICSOFT_cpu.yaml" "$C/retinanet_R_18_PAN_SE_ATSS_VFL_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_DIL_cpu.yaml" "$C/retinanet_R_18_PAN_SE_DCN_cpu.yaml"
)
S=retinanet_R_18_PAN_SE_cpu
PARENTS=(
  retinanet_R_18_PAN_cpu=retinanet_R_18_FPN_cpu "$S=retinanet_R_18_PAN_cpu"
  "retinanet_R_18_PAN_SE_ATSS_cpu=$S" "retinanet_R_18_PAN_SE_SIMOTA_cpu=$S"
  "retinanet_R_18_PAN_SE_OTA_cpu=$S" "retinanet_R_18_PAN_SE_PAA_cpu=$S"
  "retinanet_R_18_PAN_SE_DYNAMICSOFT_cpu=$S"
  retinanet_R_18_PAN_SE_ATSS_VFL_cpu=retinanet_R_18_PAN_SE_ATSS_cpu
  "retinanet_R_18_PAN_SE_DIL_cpu=$S" "retinanet_R_18_PAN_SE_DCN_cpu=$S"
)
# This ladder's full model is PAN + SE (Max-IoU), what retinanet_R_18_full_cpu.yaml was when it ran;
# the full model chosen since on val is confirmed by studies/confirm/confirm_test.sh.
FULL=$S
# detectron2's stock RetinaNet, trained and timed like every other config
REFERENCE=d2_retinanet_R_18_FPN_cpu
DATA=(--train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3)
# shellcheck disable=SC2206
ABL=("$PY" -m studies.ablation.ablation --configs "${CONFIGS[@]}" --reference
     --reference-config "$C/$REFERENCE.yaml" "${DATA[@]}"
     --seeds $SEEDS --output "$OUT" --max-iter "$ITERS" --threads "$THREADS")

if [[ $PHASE == all || $PHASE == train ]]; then
  "${ABL[@]}" || true  # a failed run is recorded in the table; the others go on
fi

if [[ $PHASE == all || $PHASE == measure ]]; then
  # several configs: side by side, interleaved, split into stages, ratio to the reference
  "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "$C/$REFERENCE.yaml" \
    "$C/retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml" \
    "$C/retinanet_R_18_full_cpu.yaml" "$C/retinanet_R_18_PAN_SE_DIL_cpu.yaml" \
    "$C/retinanet_R_18_PAN_SE_DCN_cpu.yaml" --reference "$REFERENCE" \
    --full retinanet_R_18_full_cpu --dataset bccd_test --threads 2 \
    --output output/latency MODEL.RETINANET.NUM_CLASSES 3
  "$PY" -m studies.assignment.assign_bench --config-file "$C/retinanet_R_18_PAN_SE_cpu.yaml" \
    --threads 1 --output output/assign_bench
  # one config at a time: the full cost row of each model
  rm -f output/bench/benchmark.md
  for cfg in retinanet_R_18_FPN_cpu retinanet_R_18_full_cpu retinanet_R_18_PAN_SE_DIL_cpu \
             retinanet_R_18_PAN_SE_DCN_cpu "$REFERENCE"; do
    "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "$C/$cfg.yaml" --dataset bccd_test \
      --threads 2 --output output/bench MODEL.RETINANET.NUM_CLASSES 3
  done
fi

if [[ $PHASE == all || $PHASE == report ]]; then
  "${ABL[@]}" --no-run --full "$FULL" --parent "${PARENTS[@]}" --notes studies/ablation/notes.md \
    --manifest studies/ablation/study.yaml \
    --report docs/results/ablation/RESULTS_ablation.md --title "Component ladder (300 iterations, BCCD test)" \
    --extra output/latency/latency.md \
    output/assign_bench/assign_bench.md output/bench/benchmark.md
fi
