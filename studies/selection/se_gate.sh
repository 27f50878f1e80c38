#!/usr/bin/env bash
# Why the SE gates stay where they start: gradient probe of the PAN + SE runs of the model
# selection (gates starting at 0.5 and at 0.95) at iteration 100 and at the end (seed 0); the
# page is docs/results/selection/RESULTS_se_gate.md (written by studies/selection/se_gate.py).
#
#   bash studies/selection/se_gate.sh
#
# Settings (environment): SELECT (the model selection's run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SELECT=${SELECT:-output/select_bccd_bf16}
C=configs/cpu
probes=()
for name in retinanet_R_18_PAN_SE_cpu retinanet_R_18_PAN_SE_GATE3_cpu; do
  run="$SELECT/runs/$name/seed0"
  "$PY" -m bmc_detectron.analysis_tools.grad_probe --config-file "$C/$name.yaml" \
    --weights "$run/model_0000099.pth" "$run/model_final.pth" --batches 8 \
    --output "output/grad_probe/$name" MODEL.DEVICE cpu DATASETS.TRAIN "('bccd_train',)" \
    MODEL.RETINANET.NUM_CLASSES 3 DATALOADER.NUM_WORKERS 0
  probes+=("$name=output/grad_probe/$name")
done
"$PY" -m studies.selection.se_gate --probes "${probes[@]}" \
  --output docs/results/selection/RESULTS_se_gate.md
