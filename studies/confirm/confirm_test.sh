#!/usr/bin/env bash
# Confirm once on test (issue 11): the full model chosen on BCCD val (docs/results/selection/RESULTS_selection.md)
# against detectron2's reference on BCCD trainval -> test, 780 iterations, paired by seed, with
# t-intervals over seeds and bootstrap intervals over the test images, the accuracy target
# (+1.5 AP, +2.0 AP50), per-class AP and the stock numbers of ../shared/BASELINES.md in the notes.
# The runs are the same runs as the detector comparison (studies/detectors/compare_detectors.sh: same
# configs, data, precision and schedule, same folder), so neither trains them twice.
#
#   bash studies/confirm/confirm_test.sh                      # train what is missing, then the page
#   SEEDS="0 1 2" bash studies/confirm/confirm_test.sh        # fewer seeds (the page has 5)
#   REPORT=1 bash studies/confirm/confirm_test.sh             # only docs/results/confirm/RESULTS_confirm.md
#   RECIPE="STOCK:0 FLIP:0" bash studies/confirm/confirm_test.sh   # train only these recipe runs
#   PRECISION= OUT=output/recipe_fp32 RECIPE="STOCK:0" bash studies/confirm/confirm_test.sh   # in float32
#
# The recipe rows explain the reference's distance from ../shared/BASELINES.md: the reference
# trained with detectron2's stock recipe (STOCK: horizontal flip only, no gradient clipping) and
# with the stock augmentation but the project's clipping (FLIP), on the seeds that have runs.
#
# Settings (environment): OUT, SEEDS, PY, PRECISION (as in compare_detectors.sh), RECIPE.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/compare_detectors}
SEEDS=${SEEDS:-0 1 2 3 4}
REF=d2_retinanet_R_18_FPN_cpu
FULL=retinanet_R_18_full_cpu
STOCK=d2_retinanet_R_18_FPN_STOCK_cpu
FLIP=d2_retinanet_R_18_FPN_FLIP_cpu
PRECISION=${PRECISION-BMC.PRECISION.CPU_BF16 True BMC.PRECISION.CHANNELS_LAST True}
if [[ -n "${RECIPE:-}" ]]; then
  for task in $RECIPE; do
    # shellcheck disable=SC2086
    "$PY" -m studies.ablation.ablation --configs "configs/cpu/d2_retinanet_R_18_FPN_${task%%:*}_cpu.yaml" \
      --train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3 --seeds "${task##*:}" \
      --output "$OUT" --threads 1 SOLVER.CHECKPOINT_PERIOD 100 $PRECISION || true
  done
  exit 0
fi
if [[ -z "${REPORT:-}" ]]; then
  for seed in $SEEDS; do
    OUT=$OUT TASKS="$REF:$seed $FULL:$seed" bash studies/detectors/compare_detectors.sh
  done
fi
# shellcheck disable=SC2086
"$PY" -m studies.ablation.ablation --configs "configs/cpu/$REF.yaml" "configs/cpu/$FULL.yaml" \
  "configs/cpu/$STOCK.yaml" "configs/cpu/$FLIP.yaml" \
  --train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3 --seeds $SEEDS \
  --output "$OUT" --no-run --full "$FULL" --report docs/results/confirm/RESULTS_confirm.md \
  --notes studies/confirm/notes.md --manifest studies/confirm/study.yaml \
  --parent "$STOCK=$REF" "$FLIP=$REF" \
  --title "Confirm once on test: the full model against detectron2's RetinaNet (BCCD)"
