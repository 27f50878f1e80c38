#!/usr/bin/env bash
# Robustness to scale and stain of detectron2's reference RetinaNet and the full model (BCCD train,
# 780 iterations, bf16, seed 0 of the model selection) on BCCD test: each model plain, with the
# red-cell auto-scale (per image and per case) and with Reinhard stain normalisation at inference.
# One page with the tables, curves, the ruler's estimated vs true factors and the scale verdict:
# docs/results/robustness/RESULTS_robustness.md (+ docs/results/robustness/RESULTS_robustness_scale.png, _stain.png, and _boxes.md:
# per-class AP and white-cell box sizes under the H/E shifts). Resumable: a
# finished sweep (its robustness.json) is not run again.
#
#   bash studies/robustness/robustness.sh                # run what is missing, then the page
#   REPORT=1 bash studies/robustness/robustness.sh       # only the page
#
# Settings (environment): PY, RUNS (the model selection's runs), OUT, PAGE, NOTES (hand-written,
# placed under the header), SEED, MODELS
# ("label:run_name ..."), VARIANTS ("plain auto-scale auto-scale-case reinhard"; auto-scale: each
# image resized by its own red cells; auto-scale-case: all images of a condition by their median,
# as the count command resizes a case's fields). A model's training profile is
# RUN/training_profile.json when the run has one, else it is made (bccd_train) under
# $OUT/profiles/<label>/ (the runs folder is left as it is).
# TRAINED ("label:run_name ...", swept with TRAINED_VARIANTS, default "plain auto-scale-case"):
# the training-side measures, models of their own trained like the model selection, e.g.
#   OUT=output/select_bccd_bf16 TASKS="d2_retinanet_R_18_FPN_MS_cpu:0 retinanet_R_18_full_MS_cpu:0
#     d2_retinanet_R_18_FPN_HED_cpu:0 retinanet_R_18_full_HED_cpu:0" bash studies/selection/model_selection.sh
# (multi-scale training: *_MS_cpu.yaml; H&E stain augmentation: *_HED_cpu.yaml). A TRAINED model
# whose run has no model_final.pth yet is left out of the page, with a message.
# MORE_SEEDS (default "1"): other seeds of every model (MODELS and TRAINED) swept plain only
# into $OUT/seed<s>/, where their runs are finished: the page's "over seeds" section compares each
# training-side measure with its base model paired by seed (robustness_report --seed-inputs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-output/select_bccd_bf16/runs}
OUT=${OUT:-output/robustness}
PAGE=${PAGE:-docs/results/robustness/RESULTS_robustness.md}
SEED=${SEED:-0}
MORE_SEEDS=${MORE_SEEDS-1}
NOTES=${NOTES:-studies/robustness/notes.md}
# "full" is the model chosen on val (PAN + SE with open gates + PAA, studies/selection/notes.md). A
# finished sweep in OUT is reused by its label, whatever model made it: a new model, a new OUT.
MODELS=${MODELS:-reference:d2_retinanet_R_18_FPN_cpu full:retinanet_R_18_PAN_SE_GATE3_PAA_cpu}
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

sweep() {  # label run variant dir: one sweep (skipped when its robustness.json exists)
  local label=$1 run=$2 variant=$3 dir=$4 profile flags
  [[ -n "${REPORT:-}" || -f "$dir/robustness.json" ]] && return 0
  profile=$(profile_of "$label" "$run")
  case $variant in
    plain) flags=() ;;
    auto-scale) flags=(--auto-scale) ;;
    auto-scale-case) flags=(--auto-scale case) ;;
    reinhard) flags=(--stain-normalize reinhard) ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  echo "== $label $variant ($run)" >&2
  "$PY" -m studies.robustness.robustness --config-file "$run/config.yaml" \
    --weights "$run/model_final.pth" --label "$label" --dataset bccd_test \
    --scales "${SCALES[@]}" --stain-shifts "${SHIFTS[@]}" --training-profile "$profile" \
    "${flags[@]}" --output "$dir"
}

inputs=()
seed_inputs=()
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
  for variant in ${item#*|}; do
    sweep "$label" "$RUNS/${model#*:}/seed$SEED" "$variant" "$OUT/$label/$variant"
    inputs+=("$OUT/$label/$variant/robustness.json")
  done
done
for seed in $MORE_SEEDS; do
  for model in $MODELS $TRAINED; do
    label=${model%%:*}
    run="$RUNS/${model#*:}/seed$seed"
    dir="$OUT/seed$seed/$label/plain"
    [[ -f "$run/model_final.pth" || -f "$dir/robustness.json" ]] || continue
    sweep "$label" "$run" plain "$dir"
    [[ -f "$dir/robustness.json" ]] && seed_inputs+=("$seed:$dir/robustness.json")
  done
done
"$PY" -m studies.robustness.robustness_report --inputs "${inputs[@]}" --output "$PAGE" \
  --command "bash studies/robustness/robustness.sh" --seed "$SEED" --seed-inputs "${seed_inputs[@]}" \
  --notes "$NOTES" \
  --title "Robustness to scale and stain, with and without the measures"
# Per-class AP and white-cell box sizes under the H and E shifts, from the plain sweeps' kept
# detections (tools/robustness_boxes): ${PAGE%.md}_boxes.md.
boxes=()
for model in $MODELS $TRAINED; do
  label=${model%%:*}
  [[ -d "$OUT/$label/plain/copies" ]] && boxes+=("$label=$OUT/$label/plain")
  for seed in $MORE_SEEDS; do
    dir="$OUT/seed$seed/$label/plain"
    [[ -d "$dir/copies" ]] && boxes+=("$label s$seed=$dir")
  done
done
"$PY" -m studies.robustness.robustness_boxes --sweeps "${boxes[@]}" --class WBC \
  --conditions e_0 e_0p15 e_m0p15 h_0p15 h_m0p15 --output "${PAGE%.md}_boxes.md" \
  --title "White-cell boxes under stain shifts (BCCD test; seed $SEED unless marked)"
