#!/usr/bin/env bash
# Error analysis (issue "see why"): the stock reference and the full model, seed 0 of the model
# selection (BCCD train, 780 iterations), on BCCD test; the page is
# docs/results/errors/RESULTS_errors.md with its figures (written by studies/errors/page.py).
#
#   bash studies/errors/errors.sh           # an analysis already in output/ is kept
#   REDO=1 bash studies/errors/errors.sh    # analyse again
#
# Settings (environment): SELECT (the model selection's run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SELECT=${SELECT:-output/select_bccd_bf16}
C=configs/cpu
# detectron2's stock RetinaNet and the full model chosen on val (configs/cpu/retinanet_R_18_full_cpu.yaml),
# by the name of its model-selection runs
REFERENCE=d2_retinanet_R_18_FPN_cpu
FULL=retinanet_R_18_PAN_SE_GATE3_PAA_cpu
for pair in "$REFERENCE:ref" "$FULL:full"; do
  name=${pair%%:*} tag=${pair##*:}
  [[ -f "output/errors_bccd_$tag/errors.json" && -z "${REDO:-}" ]] || \
  "$PY" -m bmc_detectron.analysis_tools.analyze_errors --config-file "$C/$name.yaml" \
    --weights "$SELECT/runs/$name/seed0/model_final.pth" --dataset bccd_test \
    --output "output/errors_bccd_$tag" --gallery 4 MODEL.DEVICE cpu MODEL.RETINANET.NUM_CLASSES 3
done
"$PY" -m studies.errors.page --reference "$REFERENCE" --reference-dir output/errors_bccd_ref \
  --full "$FULL" --full-dir output/errors_bccd_full --output docs/results/errors/RESULTS_errors.md
