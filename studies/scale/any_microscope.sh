#!/usr/bin/env bash
# Any microscope (issue 31, section 3): the count on marrow_real val and BCCD test fields resized
# by 0.4-2.5x and degraded to 20x / 40x scanner resolution, with the automatic scale off and on.
# Page: docs/results/scale/RESULTS_any_microscope.md (+ its .png). Resumable: run it again and
# only the cases still missing are counted (output in $WORK).
#
#   bash studies/scale/any_microscope.sh                 # everything
#   LIMIT=10 bash studies/scale/any_microscope.sh        # the first 10 fields per dataset
#   REPORT=1 bash studies/scale/any_microscope.sh        # only the page, from $WORK/results.json
#
# Settings (environment): PY, RUN (the detector's run folder: config.yaml, model_final.pth and
# training_profile.json; `bash studies/real_marrow/detectors.sh` trains it into output/marrow_real), CONFIG, WEIGHTS, CLASSIFIER_CONFIG / CLASSIFIER_WEIGHTS (optional),
# DATASETS (NAME[:CLASS,...]; BCCD scored on WBC only, the cells a nucleated-cell detector finds),
# LIMIT, CASE_SIZE, WORK, PAGE, DEVICE, BASE_SCALE (NAME=X: a dataset's true scale, the factor
# that brings its fields to the training pixels).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-output/marrow_real/retinanet_R_18_full_agnostic_marrow_real_cpu}
CONFIG=${CONFIG:-$RUN/config.yaml}
WEIGHTS=${WEIGHTS:-$RUN/model_final.pth}
DATASETS=${DATASETS:-marrow_real_val bccd_test:WBC}
LIMIT=${LIMIT:-0}
CASE_SIZE=${CASE_SIZE:-5}
WORK=${WORK:-output/any_microscope}
PAGE=${PAGE:-docs/results/scale/RESULTS_any_microscope.md}
DEVICE=${DEVICE:-cpu}
# BCCD photographs: about 0.09 um/px; the composites the detector learnt from: 0.25 um/px
BASE_SCALE=${BASE_SCALE:-bccd_test=0.36}
args=(--detector-config "$CONFIG" --detector-weights "$WEIGHTS" --datasets $DATASETS
      --limit "$LIMIT" --case-size "$CASE_SIZE" --work "$WORK" --page "$PAGE" --device "$DEVICE" --base-scale $BASE_SCALE)
if [[ -n "${CLASSIFIER_CONFIG:-}" ]]; then
  args+=(--classifier-config "$CLASSIFIER_CONFIG" --classifier-weights "$CLASSIFIER_WEIGHTS")
fi
[[ -n "${REPORT:-}" ]] && args+=(--report-only)
"$PY" -m studies.scale.any_microscope "${args[@]}"
