#!/usr/bin/env bash
# Robustness to scale and stain of detectron2's reference RetinaNet and the full model (BCCD train,
# 780 iterations, bf16, seed 0 of the model selection) on BCCD test: each model plain, with the
# red-cell auto-scale (per image and per case) and with Reinhard stain normalisation at inference.
# One page with the tables, curves, the ruler's estimated vs true factors and the scale verdict:
# docs/RESULTS_robustness.md (+ docs/RESULTS_robustness_scale.png, _stain.png). Resumable: a
# finished sweep (its robustness.json) is not run again.
#
#   bash scripts/robustness.sh                # run what is missing, then the page
#   REPORT=1 bash scripts/robustness.sh       # only the page
#
# Settings (environment): PY, RUNS (the model selection's runs), OUT, PAGE, SEED, MODELS
# ("label:run_name ..."), VARIANTS ("plain auto-scale auto-scale-case reinhard"; auto-scale: each
# image resized by its own red cells; auto-scale-case: all images of a condition by their median,
# as the count command resizes a case's fields). A model's training profile is
# RUN/training_profile.json when the run has one, else it is made (bccd_train) under
# $OUT/profiles/<label>/ (the runs folder is left as it is).
# TRAINED ("label:run_name ...", swept with TRAINED_VARIANTS, default "plain auto-scale-case"):
# the training-side measures, models of their own trained like the model selection, e.g.
#   OUT=output/select_bccd_bf16 TASKS="d2_retinanet_R_18_FPN_MS_cpu:0 retinanet_R_18_full_MS_cpu:0
#     d2_retinanet_R_18_FPN_HED_cpu:0 retinanet_R_18_full_HED_cpu:0" bash scripts/model_selection.sh
# (multi-scale training: *_MS_cpu.yaml; H&E stain augmentation: *_HED_cpu.yaml). A TRAINED model
# whose run has no model_final.pth yet is left out of the page, with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-output/select_bccd_bf16/runs}
OUT=${OUT:-output/robustness}
PAGE=${PAGE:-docs/RESULTS_robustness.md}
SEED=${SEED:-0}
# "full" here is the full model of when this page was measured (PAN + SE, Max-IoU); the model
# chosen since on val is retinanet_R_18_PAN_SE_GATE3_PAA_cpu: sweep it into a new OUT (a finished
# sweep in OUT is reused by its label, whatever model made it).
MODELS=${MODELS:-reference:d2_retinanet_R_18_FPN_cpu full:retinanet_R_18_PAN_SE_cpu}
VARIANTS=${VARIANTS:-plain auto-scale auto-scale-case reinhard}
TRAINED=${TRAINED-reference-ms:d2_retinanet_R_18_FPN_MS_cpu full-ms:retinanet_R_18_full_MS_cpu
  reference-hed:d2_retinanet_R_18_FPN_HED_cpu full-hed:retinanet_R_18_full_HED_cpu}
TRAINED_VARIANTS=${TRAINED_VARIANTS:-plain auto-scale-case}
SCALES=(0.5 0.75 1 1.5 2 3)
SHIFTS=(hue:-20 hue:20 sat:0.6 sat:1.4 h:0.15 h:-0.15 e:0.15 e:-0.15)

profile_of() {  # label run -> the training profile's path (made when missing)
  local profile="$2/training_profile.json"
  if [[ ! -f $profile ]]; then
    profile="$OUT/profiles/$1/training_profile.json"
    [[ -f $profile ]] || "$PY" -m bmc_detectron.tools.estimate_scale --dataset bccd_train \
      --output "$profile" --config-file "$2/config.yaml" >&2
  fi
  echo "$profile"
}

inputs=()
todo=()
for model in $MODELS; do todo+=("$model|$VARIANTS"); done
for model in $TRAINED; do
  if [[ -f "$RUNS/${model#*:}/seed$SEED/model_final.pth" ]]; then
    todo+=("$model|$TRAINED_VARIANTS")
  else
    echo "robustness: $model left out (no $RUNS/${model#*:}/seed$SEED/model_final.pth)" >&2
  fi
done
for item in "${todo[@]}"; do
  model=${item%%|*}
  label=${model%%:*}
  run="$RUNS/${model#*:}/seed$SEED"
  profile=$(profile_of "$label" "$run")
  for variant in ${item#*|}; do
    dir="$OUT/$label/$variant"
    inputs+=("$dir/robustness.json")
    [[ -n "${REPORT:-}" || -f "$dir/robustness.json" ]] && continue
    case $variant in
      plain) flags=() ;;
      auto-scale) flags=(--auto-scale) ;;
      auto-scale-case) flags=(--auto-scale case) ;;
      reinhard) flags=(--stain-normalize reinhard) ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    echo "== $label $variant" >&2
    "$PY" -m bmc_detectron.tools.robustness --config-file "$run/config.yaml" \
      --weights "$run/model_final.pth" --label "$label" --dataset bccd_test \
      --scales "${SCALES[@]}" --stain-shifts "${SHIFTS[@]}" --training-profile "$profile" \
      "${flags[@]}" --output "$dir"
  done
done
"$PY" -m bmc_detectron.tools.robustness_report --inputs "${inputs[@]}" --output "$PAGE" \
  --command "bash scripts/robustness.sh" \
  --title "Robustness to scale and stain, with and without the measures"
