#!/usr/bin/env bash
# Confirm once on test (issue 11): the full model chosen on BCCD val (docs/RESULTS_selection.md)
# against detectron2's reference on BCCD trainval -> test, 780 iterations, paired by seed, with
# t-intervals over seeds and bootstrap intervals over the test images, the accuracy target
# (+1.5 AP, +2.0 AP50), per-class AP and the stock numbers of ../shared/BASELINES.md in the notes.
# The runs are the same runs as the detector comparison (scripts/compare_detectors.sh: same
# configs, data, precision and schedule, same folder), so neither trains them twice.
#
#   bash scripts/confirm_test.sh                      # train what is missing, then the page
#   SEEDS="0 1 2 3 4" bash scripts/confirm_test.sh    # more seeds
#   REPORT=1 bash scripts/confirm_test.sh             # only docs/RESULTS_confirm.md
#
# Settings (environment): OUT, SEEDS, PY, PRECISION (as in compare_detectors.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/compare_detectors}
SEEDS=${SEEDS:-0 1 2}
REF=d2_retinanet_R_18_FPN_cpu
FULL=retinanet_R_18_full_cpu
if [[ -z "${REPORT:-}" ]]; then
  for seed in $SEEDS; do
    OUT=$OUT TASKS="$REF:$seed $FULL:$seed" bash scripts/compare_detectors.sh
  done
fi
# shellcheck disable=SC2086
"$PY" -m bmc_detectron.tools.ablation --configs "configs/cpu/$REF.yaml" "configs/cpu/$FULL.yaml" \
  --train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3 --seeds $SEEDS \
  --output "$OUT" --no-run --full "$FULL" --report docs/RESULTS_confirm.md \
  --notes docs/confirm_notes.md
