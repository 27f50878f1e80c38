#!/usr/bin/env bash
# Label assignment, seen (issue "see why"): every assigner on BCCD test (prediction-aware ones
# with the full model's seed-0 model-selection weights) and on the synthetic marrow smears
# (untrained model), dataset statistics and the band-cell case; the page is
# docs/results/assignment/RESULTS_assignment.md with its figures (studies/assignment/page.py).
#
#   bash studies/assignment/assignment.sh
#
# Settings (environment): SELECT (the model selection's run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SELECT=${SELECT:-output/select_bccd_bf16}
C=configs/cpu
# the full model chosen on val (configs/cpu/retinanet_R_18_full_cpu.yaml), by the name of its
# model-selection runs
FULL=retinanet_R_18_PAN_SE_GATE3_PAA_cpu
"$PY" -m bmc_detectron.analysis_tools.show_assignment --config-file "$C/$FULL.yaml" \
  --weights "$SELECT/runs/$FULL/seed0/model_final.pth" --dataset bccd_test --images 2 \
  --output output/assign_bccd MODEL.DEVICE cpu MODEL.RETINANET.NUM_CLASSES 3
"$PY" -m bmc_detectron.analysis_tools.show_assignment --config-file "$C/$FULL.yaml" \
  --dataset bmc_synth_test --images 2 --output output/assign_synth MODEL.DEVICE cpu \
  MODEL.RETINANET.NUM_CLASSES 11
"$PY" -m studies.assignment.page --bccd output/assign_bccd --synth output/assign_synth \
  --output docs/results/assignment/RESULTS_assignment.md
