#!/usr/bin/env bash
# Regenerate docs/RESULTS.md from runs: the BCCD ablation (train + evaluate), the side-by-side
# latency table (benchmark --configs C1 C2 ...), the assignment micro-benchmark and one cost row
# per model (benchmark --configs C), then the report.
#
#   bash scripts/results.sh                 # everything (many CPU-hours on 2 cores)
#   PHASE=train bash scripts/results.sh     # only the ablation runs (resumable)
#   PHASE=measure bash scripts/results.sh   # latency, assignment, cost rows (~15 min, keep quiet)
#   PHASE=report bash scripts/results.sh    # only rewrite docs/RESULTS.md from what exists
#
# Settings (environment): ITERS (schedule length, scaled from the CPU config's 780), SEEDS,
# THREADS (torch threads per training run), OUT (run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
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
# retinanet_R_18_full_cpu.yaml is the same model as retinanet_R_18_PAN_SE_cpu.yaml (see its
# header), so the PAN + SE runs are the full model's runs.
FULL=$S
# detectron2's stock RetinaNet, trained and timed like every other config
REFERENCE=d2_retinanet_R_18_FPN_cpu
DATA=(--train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3)
ABL=("$PY" -m bmc_detectron.tools.ablation --configs "${CONFIGS[@]}" --reference
     --reference-config "$C/$REFERENCE.yaml" "${DATA[@]}"
     --seeds $SEEDS --output "$OUT" --max-iter "$ITERS" --threads "$THREADS")

if [[ $PHASE == all || $PHASE == train ]]; then
  "${ABL[@]}" || true  # a failed run is recorded in the table; the others go on
fi

if [[ $PHASE == all || $PHASE == measure ]]; then
  # several configs: side by side, interleaved, split into stages, ratio to the reference
  "$PY" -m bmc_detectron.tools.benchmark --configs "$C/$REFERENCE.yaml" \
    "$C/retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml" \
    "$C/retinanet_R_18_full_cpu.yaml" "$C/retinanet_R_18_PAN_SE_DIL_cpu.yaml" \
    "$C/retinanet_R_18_PAN_SE_DCN_cpu.yaml" --reference "$REFERENCE" \
    --full retinanet_R_18_full_cpu --dataset bccd_test --threads 2 \
    --output output/latency MODEL.RETINANET.NUM_CLASSES 3
  "$PY" -m bmc_detectron.tools.assign_bench --config-file "$C/retinanet_R_18_PAN_SE_cpu.yaml" \
    --threads 1 --output output/assign_bench
  # one config at a time: the full cost row of each model
  rm -f output/bench/benchmark.md
  for cfg in retinanet_R_18_FPN_cpu retinanet_R_18_full_cpu retinanet_R_18_PAN_SE_DIL_cpu \
             retinanet_R_18_PAN_SE_DCN_cpu "$REFERENCE"; do
    "$PY" -m bmc_detectron.tools.benchmark --configs "$C/$cfg.yaml" --dataset bccd_test \
      --threads 2 --output output/bench MODEL.RETINANET.NUM_CLASSES 3
  done
fi

if [[ $PHASE == all || $PHASE == report ]]; then
  "${ABL[@]}" --no-run --full "$FULL" --parent "${PARENTS[@]}" --notes docs/results_notes.md \
    --report docs/RESULTS.md --extra output/latency/latency.md \
    output/assign_bench/assign_bench.md output/bench/benchmark.md
fi
