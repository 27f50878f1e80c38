#!/usr/bin/env bash
# Where the full model loses to Faster R-CNN (issue 25): TIDE-style error analysis of the two
# detectors' seed-0 runs of the budget study (BCCD train, 780 iterations, bf16) on BCCD val (the
# split the gap is chosen on); the page is docs/results/gap/RESULTS_gap_errors.md with its figures
# (written by studies/errors/page.py).
#
#   bash studies/gap/errors.sh           # an analysis already in OUT is kept
#   REDO=1 bash studies/gap/errors.sh    # analyse again
#
# Settings (environment): BUDGET (the budget study's runs root), OUT (analysis folders), PY.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
BUDGET=${BUDGET:-output/budget}
OUT=${OUT:-output/gap/errors}
PEER=faster_rcnn_R_18_FPN_cpu
FULL=retinanet_R_18_full_cpu
for pair in "$PEER:configs/cpu/compare/$PEER.yaml" "$FULL:configs/cpu/$FULL.yaml"; do
  name=${pair%%:*} config=${pair#*:}
  [[ -f "$OUT/$name/errors.json" && -z "${REDO:-}" ]] || \
  "$PY" -m bmc_detectron.analysis_tools.analyze_errors --config-file "$config" \
    --weights "$BUDGET/budget_780/runs/$name/seed0/model_final.pth" --dataset bccd_val \
    --output "$OUT/$name" --gallery 4 MODEL.DEVICE cpu MODEL.RETINANET.NUM_CLASSES 3
done
"$PY" -m studies.errors.page --reference "$PEER" --reference-dir "$OUT/$PEER" \
  --full "$FULL" --full-dir "$OUT/$FULL" --output docs/results/gap/RESULTS_gap_errors.md \
  --driver "bash studies/gap/errors.sh" \
  --title "Where the full model loses to Faster R-CNN: errors on BCCD val" \
  --about "on the seed-0 runs of the budget study (trained on BCCD \`train\`, 780 iterations,
bf16), detectron2's Faster R-CNN (\`{ref}\`, here the \"reference\") and the
full model (\`{full}\`), on BCCD \`val\`."
