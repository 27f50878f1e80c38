#!/usr/bin/env bash
# Real cells of another lab, end to end: PBC's val images (one expert-boxed, expert-named white
# cell each, CellaVision, unknown scale) counted by the PAN detector of the model selection
# (trained on BCCD train: its WBC class finds the white cells) + the PBC cell classifier
# (RESULTS_recognition.md), with and without red cells as a ruler; scored by count_eval. The page
# is docs/results/recognition/RESULTS_pbc_count.md (written by studies/recognition/pbc_count.py).
#
#   bash studies/recognition/pbc_count.sh           # a finished count is kept
#   REDO=1 bash studies/recognition/pbc_count.sh    # count again
#
# Settings (environment): SELECT (the model selection's run folder), CLS (the PBC classifier's
# run folder), BMC_SHARED_DATASETS, PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SELECT=${SELECT:-output/select_bccd_bf16}
RUN="$SELECT/runs/retinanet_R_18_PAN_cpu/seed0"
CLS=${CLS:-output/classifier_pbc}
DATASETS=${BMC_SHARED_DATASETS:-../shared/datasets}
[[ -f "$RUN/training_profile.json" ]] || "$PY" -m bmc_detectron.tools.estimate_scale \
  --dataset bccd_train --output "$RUN/training_profile.json" --config-file "$RUN/config.yaml"
for mode in plain auto; do
  extra=(); [[ $mode == auto ]] && extra=(--auto-scale)
  [[ -f "output/pbc_count_$mode/summary.json" && -z "${REDO:-}" ]] || \
  "$PY" -m bmc_detectron.tools.count --detector-config "$RUN/config.yaml" \
    --detector-weights "$RUN/model_final.pth" --detector-classes WBC \
    --classifier-config configs/recognition/cell_classifier_R_18_pbc_cpu.yaml \
    --classifier-weights "$CLS/model_final.pth" --input "$DATASETS/pbc_wbc/val/images" \
    --output "output/pbc_count_$mode" --no-progress --device cpu --overwrite "${extra[@]}"
  "$PY" -m bmc_detectron.tools.count_eval --report "output/pbc_count_$mode" \
    --dataset pbc_marrow_val > /dev/null
done
"$PY" -m studies.recognition.pbc_count --plain output/pbc_count_plain \
  --auto output/pbc_count_auto --classifier "$CLS" \
  --output docs/results/recognition/RESULTS_pbc_count.md
