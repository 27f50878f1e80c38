#!/usr/bin/env bash
# One stage or two on real cells (BCCD test): the PAN detector of the model selection (3 classes,
# seed 0, BCCD train) alone vs the same PAN as a class-agnostic detector + a crop classifier, both
# trained on BCCD train (STAGES: their run folders); the page is
# docs/results/stages/RESULTS_stages_bccd.md (written by studies/stages/compare_stages.py).
#
#   bash studies/stages/stages_bccd.sh
#
# Settings (environment): SELECT (the model selection's run folder), STAGES, PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SELECT=${SELECT:-output/select_bccd_bf16}
STAGES=${STAGES:-output/stages_bccd}
ONE="$SELECT/runs/retinanet_R_18_PAN_cpu/seed0"
"$PY" -m studies.stages.compare_stages --dataset bccd_test \
  --one-stage-config "$ONE/config.yaml" --one-stage-weights "$ONE/model_final.pth" \
  --detector-config "$STAGES/detector/config.yaml" \
  --detector-weights "$STAGES/detector/model_final.pth" \
  --classifier-config "$STAGES/classifier/config.yaml" \
  --classifier-weights "$STAGES/classifier/model_final.pth" \
  --output output/stages_bccd_report --report docs/results/stages/RESULTS_stages_bccd.md \
  --train-command "OUT=$SELECT TASKS=retinanet_R_18_PAN_cpu:0 bash studies/selection/model_selection.sh" \
  --train-command "python train_net.py --config-file configs/cpu/agnostic/retinanet_R_18_PAN_agnostic_bccd_train_cpu.yaml OUTPUT_DIR $STAGES/detector" \
  --train-command "python train_net.py --config-file configs/recognition/cell_classifier_R_18_bccd_cpu.yaml OUTPUT_DIR $STAGES/classifier"
