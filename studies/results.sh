#!/usr/bin/env bash
# Regenerate docs/results/ablation/RESULTS_ablation.md from runs: the BCCD ablation (train + evaluate), the side-by-side
# latency table (benchmark --configs C1 C2 ...), the assignment micro-benchmark and one cost row
# per model (benchmark --configs C), then the report.
#
#   bash studies/results.sh                 # everything (many CPU-hours on 2 cores)
#   PHASE=train bash studies/results.sh     # only the ablation runs (resumable)
#   PHASE=measure bash studies/results.sh   # latency, assignment, cost rows (~15 min, keep quiet)
#   PHASE=report bash studies/results.sh    # only rewrite docs/results/ablation/RESULTS_ablation.md from what exists
#
# Other pages (each phase alone): PHASE=deploy (docs/results/deploy/RESULTS_deploy.md), errors
# (RESULTS_errors.md), assign (RESULTS_assignment.md), se (RESULTS_se_gate.md), pbc
# (RESULTS_pbc_count.md), stages_bccd (RESULTS_stages_bccd.md); the error, assignment, SE, PBC
# and stage pages read the model-selection runs (SELECT=output/select_bccd_bf16).
#
# Settings (environment): ITERS (schedule length, scaled from the CPU config's 780), SEEDS,
# THREADS (torch threads per training run), OUT (run folder), PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PHASE=${PHASE:-all}
ITERS=${ITERS:-300}
SEEDS=${SEEDS:-0 1}
THREADS=${THREADS:-2}
OUT=${OUT:-output/ablation_bccd}
C=configs/cpu

# The ladder: baseline, +PAN, +attention, each assigner, soft labels, dilation, DCN.
CONFIGS=(
  "$C/retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml" "$C/retinanet_R_18_PAN_SE_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_ATSS_cpu.yaml" "$C/retinanet_R_18_PAN_SE_SIMOTA_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_OTA_cpu.yaml" "$C/retinanet_R_18_PAN_SE_PAA_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_DYNAMICSOFT_cpu.yaml" "$C/retinanet_R_18_PAN_SE_ATSS_VFL_cpu.yaml"
  "$C/retinanet_R_18_PAN_SE_DIL_cpu.yaml" "$C/retinanet_R_18_PAN_SE_DCN_cpu.yaml"
)
S=retinanet_R_18_PAN_SE_cpu
PARENTS=(
  retinanet_R_18_PAN_cpu=retinanet_R_18_FPN_cpu "$S=retinanet_R_18_PAN_cpu"
  "retinanet_R_18_PAN_SE_ATSS_cpu=$S" "retinanet_R_18_PAN_SE_SIMOTA_cpu=$S"
  "retinanet_R_18_PAN_SE_OTA_cpu=$S" "retinanet_R_18_PAN_SE_PAA_cpu=$S"
  "retinanet_R_18_PAN_SE_DYNAMICSOFT_cpu=$S"
  retinanet_R_18_PAN_SE_ATSS_VFL_cpu=retinanet_R_18_PAN_SE_ATSS_cpu
  "retinanet_R_18_PAN_SE_DIL_cpu=$S" "retinanet_R_18_PAN_SE_DCN_cpu=$S"
)
# This ladder's full model is PAN + SE (Max-IoU), what retinanet_R_18_full_cpu.yaml was when it ran;
# the full model chosen since on val is confirmed by studies/confirm/confirm_test.sh.
FULL=$S
# the full model chosen on val (configs/cpu/retinanet_R_18_full_cpu.yaml), by the name of its
# model-selection runs: the errors and assignment pages use its seed-0 run
CHOSEN=retinanet_R_18_PAN_SE_GATE3_PAA_cpu
# detectron2's stock RetinaNet, trained and timed like every other config
REFERENCE=d2_retinanet_R_18_FPN_cpu
DATA=(--train-dataset bccd_trainval --test-dataset bccd_test --num-classes 3)
ABL=("$PY" -m studies.ablation.ablation --configs "${CONFIGS[@]}" --reference
     --reference-config "$C/$REFERENCE.yaml" "${DATA[@]}"
     --seeds $SEEDS --output "$OUT" --max-iter "$ITERS" --threads "$THREADS")

if [[ $PHASE == all || $PHASE == train ]]; then
  "${ABL[@]}" || true  # a failed run is recorded in the table; the others go on
fi

if [[ $PHASE == all || $PHASE == measure ]]; then
  # several configs: side by side, interleaved, split into stages, ratio to the reference
  "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "$C/$REFERENCE.yaml" \
    "$C/retinanet_R_18_FPN_cpu.yaml" "$C/retinanet_R_18_PAN_cpu.yaml" \
    "$C/retinanet_R_18_full_cpu.yaml" "$C/retinanet_R_18_PAN_SE_DIL_cpu.yaml" \
    "$C/retinanet_R_18_PAN_SE_DCN_cpu.yaml" --reference "$REFERENCE" \
    --full retinanet_R_18_full_cpu --dataset bccd_test --threads 2 \
    --output output/latency MODEL.RETINANET.NUM_CLASSES 3
  "$PY" -m studies.assignment.assign_bench --config-file "$C/retinanet_R_18_PAN_SE_cpu.yaml" \
    --threads 1 --output output/assign_bench
  # one config at a time: the full cost row of each model
  rm -f output/bench/benchmark.md
  for cfg in retinanet_R_18_FPN_cpu retinanet_R_18_full_cpu retinanet_R_18_PAN_SE_DIL_cpu \
             retinanet_R_18_PAN_SE_DCN_cpu "$REFERENCE"; do
    "$PY" -m bmc_detectron.analysis_tools.benchmark --configs "$C/$cfg.yaml" --dataset bccd_test \
      --threads 2 --output output/bench MODEL.RETINANET.NUM_CLASSES 3
  done
fi

if [[ $PHASE == all || $PHASE == report ]]; then
  "${ABL[@]}" --no-run --full "$FULL" --parent "${PARENTS[@]}" --notes studies/ablation/notes.md \
    --report docs/results/ablation/RESULTS_ablation.md --title "Component ladder (300 iterations, BCCD test)" \
    --extra output/latency/latency.md \
    output/assign_bench/assign_bench.md output/bench/benchmark.md
fi

# Deployment page (needs `make demo` first): ONNX Runtime vs PyTorch (float32 and the models' own
# bf16), and the speed of counting a 100-field case of 640x480 fields.
if [[ $PHASE == deploy ]]; then
  D=output/demo
  DET=(--config-file "$D/detector/config.yaml" --weights "$D/detector/model_final.pth"
       --onnx "$D/onnx/detector.onnx")
  CLS=(--classifier-config "$D/classifier/config.yaml" --classifier-weights
       "$D/classifier/model_final.pth" --classifier-onnx "$D/onnx/classifier.onnx")
  BENCH=(--num-images 4 --size 480 640 --rounds 6 --warmup 2 --threads 1 2)
  "$PY" -m bmc_detectron.analysis_tools.onnx_bench "${DET[@]}" "${BENCH[@]}" --output output/onnx_fp32 \
    BMC.PRECISION.CPU_BF16 False BMC.PRECISION.CHANNELS_LAST False
  "$PY" -m bmc_detectron.analysis_tools.onnx_bench "${DET[@]}" "${CLS[@]}" "${BENCH[@]}" --output output/onnx_own
  "$PY" -c "from pathlib import Path; from bmc_detectron.data.synthetic import generate_dataset as g
g(Path('output/case100'), 'fields', 100, seed=11, height=480, width=640)"
  start=$SECONDS
  "$PY" -m bmc_detectron.tools.count --detector-config "$D/detector/config.yaml" \
    --detector-weights "$D/detector/model_final.pth" --classifier-config \
    "$D/classifier/config.yaml" --classifier-weights "$D/classifier/model_final.pth" \
    --input output/case100/fields --output output/case100/report --overwrite --no-progress
  wall=$((SECONDS - start))
  {
    echo "# Deployment: ONNX Runtime and the count's speed"
    echo
    echo "Generated by \`PHASE=deploy bash studies/results.sh\` on $(date -I) with the models of \`make demo\`."
    echo
    echo "## Detector, ONNX Runtime vs PyTorch in float32 (the same numerics)"
    echo
    cat output/onnx_fp32/onnx_bench.md
    echo
    echo "## Detector and count pipeline, ONNX Runtime (float32) vs PyTorch in the models' own precision"
    echo
    cat output/onnx_own/onnx_bench.md
    echo
    echo "## Counting a case of 100 fields of 640x480 (PyTorch, 2 cores, whole command)"
    echo
    "$PY" -c "import json; s = json.load(open('output/case100/report/summary.json')); t = s['timing']
print(f'| fields | cells detected | wall (s) | detection (s) | recognition (s) |')
print('|---|---|---|---|---|')
print(f\"| {len(s['fields'])} | {s['detected']} | {$wall} | {t['detect_s']:.1f} | {t['recognise_s']:.1f} |\")"
  } > docs/results/deploy/RESULTS_deploy.md
fi

# Error analysis (issue "see why"): the stock reference and the full model, seed 0 of the model
# selection (BCCD train, 780 iterations), on BCCD test; SELECT = that ablation's output folder.
if [[ $PHASE == errors ]]; then
  SELECT=${SELECT:-output/select_bccd_bf16}
  FULL=$CHOSEN
  for pair in "$REFERENCE:ref" "$FULL:full"; do
    name=${pair%%:*} tag=${pair##*:}
    [[ -f "output/errors_bccd_$tag/errors.json" && -z "${REDO:-}" ]] || \
    "$PY" -m bmc_detectron.analysis_tools.analyze_errors --config-file "$C/$name.yaml" \
      --weights "$SELECT/runs/$name/seed0/model_final.pth" --dataset bccd_test \
      --output "output/errors_bccd_$tag" --gallery 4 MODEL.DEVICE cpu MODEL.RETINANET.NUM_CLASSES 3
    cp "output/errors_bccd_$tag/errors.png" "docs/RESULTS_errors_$tag.png"
    cp "output/errors_bccd_$tag/gallery_loc.png" "docs/RESULTS_errors_${tag}_gallery_loc.png"
  done
  {
    echo "# Where the errors are: the stock reference and the full model on BCCD test"
    echo
    echo "Generated by \`PHASE=errors bash studies/results.sh\` on $(date -I): \`tools/analyze_errors\`"
    echo "on the seed-0 models of the model selection (trained on BCCD \`train\`, 780 iterations,"
    echo "bf16), detectron2's RetinaNet (\`$REFERENCE\`) and the full model (\`$FULL\`)."
    echo
    echo "## Side by side: AP50 and what each error type costs (dAP50), reference -> full model"
    echo
    echo "One model each (seed 0): a difference says where the two models' errors differ, not"
    echo "whether the full model is better (two seeds of one model differ by several AP here; see"
    echo "RESULTS_selection.md). Lower dAP50 = that error type costs less."
    echo
    "$PY" - <<'PYEOF'
import json
ref, full = (json.load(open(f"output/errors_bccd_{t}/errors.json")) for t in ("ref", "full"))
kinds = [("AP50", None), ("classification", "cls"), ("localisation", "loc"), ("cls+loc", "both"),
         ("duplicate", "dupe"), ("background", "bkg"), ("missed", "missed")]
print("| | " + " | ".join(f"{s}: ref -> full (change)" for s in ("overall", "crowded", "isolated")) + " |")
print("|---" * 4 + "|")
for name, key in kinds:
    cells = []
    for split in ("overall", "crowded", "isolated"):
        a = ref[split]["AP50"] if key is None else ref[split]["dAP"][key]
        b = full[split]["AP50"] if key is None else full[split]["dAP"][key]
        cells.append(f"{a:.2f} -> {b:.2f} ({b - a:+.2f})")
    print(f"| {name} | " + " | ".join(cells) + " |")
PYEOF
    for tag in ref full; do
      echo
      echo "## $tag: $([[ $tag == ref ]] && echo "$REFERENCE" || echo "$FULL")"
      echo
      tail -n +4 "output/errors_bccd_$tag/errors.md"
      echo
      echo "![$tag errors](RESULTS_errors_$tag.png)"
      echo
      echo "Worst localisation errors (gt left, detections right): ![$tag localisation](RESULTS_errors_${tag}_gallery_loc.png)"
    done
  } > docs/results/errors/RESULTS_errors.md
fi

# Label assignment, seen (issue "see why"): every assigner on BCCD test (prediction-aware ones
# with the full model's seed-0 model-selection weights) and on the synthetic marrow smears
# (untrained model), dataset statistics and the band-cell case.
if [[ $PHASE == assign ]]; then
  SELECT=${SELECT:-output/select_bccd_bf16}
  FULL=$CHOSEN
  "$PY" -m bmc_detectron.analysis_tools.show_assignment --config-file "$C/$FULL.yaml" \
    --weights "$SELECT/runs/$FULL/seed0/model_final.pth" --dataset bccd_test --images 2 \
    --output output/assign_bccd MODEL.DEVICE cpu MODEL.RETINANET.NUM_CLASSES 3
  "$PY" -m bmc_detectron.analysis_tools.show_assignment --config-file "$C/$FULL.yaml" \
    --dataset bmc_synth_test --images 2 --output output/assign_synth MODEL.DEVICE cpu \
    MODEL.RETINANET.NUM_CLASSES 11
  for set in bccd synth; do
    first=$(ls output/assign_$set/*_assign.png | head -n 1)
    stem=$(basename "$first" _assign.png)
    for kind in assign atss levels; do
      cp "output/assign_$set/${stem}_$kind.png" "docs/RESULTS_assignment_${set}_$kind.png"
    done
    cp "output/assign_$set/assignment_stats.png" "docs/RESULTS_assignment_${set}_stats.png"
  done
  cp output/assign_synth/band_cell.png docs/results/assignment/RESULTS_assignment_band_cell.png
  {
    echo "# Label assignment, seen"
    echo
    echo "Generated by \`PHASE=assign bash studies/results.sh\` on $(date -I) with"
    echo "\`tools/show_assignment\` (every assigner of the project, one panel each)."
    for set in bccd synth; do
      echo
      echo "## $([[ $set == bccd ]] && echo "BCCD test" || echo "Synthetic marrow smears")"
      echo
      tail -n +3 "output/assign_$set/assignment_stats.md"
      echo
      echo "![statistics](RESULTS_assignment_${set}_stats.png)"
      echo
      echo "One image, one panel per assigner: ![assign](RESULTS_assignment_${set}_assign.png)"
      echo
      echo "ATSS per gt (bar per level = mean IoU of its candidates; line = mean + std threshold):"
      echo "![atss](RESULTS_assignment_${set}_atss.png)"
      echo
      echo "Positives per gt and pyramid level: ![levels](RESULTS_assignment_${set}_levels.png)"
    done
    echo
    echo "## The band cell (synthetic \`Rods\`): the box centre lies on background"
    echo
    echo "![band cell](RESULTS_assignment_band_cell.png)"
  } > docs/results/assignment/RESULTS_assignment.md
fi

# Why the SE gates stay where they start: gradient probe of the PAN + SE runs (gates starting at
# 0.5 and at 0.95) at iteration 100 and at the end (seed 0 of the model selection).
if [[ $PHASE == se ]]; then
  SELECT=${SELECT:-output/select_bccd_bf16}
  {
    echo "# The SE gates' gradient"
    echo
    echo "Generated by \`PHASE=se bash studies/results.sh\` on $(date -I): \`tools/grad_probe\`, 8"
    echo "training batches of BCCD \`train\` per checkpoint, float32, no optimizer step."
  } > docs/results/selection/RESULTS_se_gate.md
  for name in retinanet_R_18_PAN_SE_cpu retinanet_R_18_PAN_SE_GATE3_cpu; do
    run="$SELECT/runs/$name/seed0"
    "$PY" -m bmc_detectron.analysis_tools.grad_probe --config-file "$C/$name.yaml" \
      --weights "$run/model_0000099.pth" "$run/model_final.pth" --batches 8 \
      --output "output/grad_probe/$name" MODEL.DEVICE cpu DATASETS.TRAIN "('bccd_train',)" \
      MODEL.RETINANET.NUM_CLASSES 3 DATALOADER.NUM_WORKERS 0
    { echo; echo "## $name"; tail -n +2 "output/grad_probe/$name/grad_probe.md"; } \
      >> docs/results/selection/RESULTS_se_gate.md
  done
fi

# Real cells of another lab, end to end: PBC's val images (one expert-boxed, expert-named white
# cell each, CellaVision, unknown scale) counted by the PAN detector of the model selection
# (trained on BCCD train: its WBC class finds the white cells) + the PBC cell classifier
# (RESULTS_recognition.md), with and without red cells as a ruler; scored by count_eval.
if [[ $PHASE == pbc ]]; then
  SELECT=${SELECT:-output/select_bccd_bf16}
  RUN="$SELECT/runs/retinanet_R_18_PAN_cpu/seed0"
  CLS=${CLS:-output/classifier_pbc}
  DATASETS=${BMC_SHARED_DATASETS:-../shared/datasets}
  [[ -f "$RUN/training_profile.json" ]] || "$PY" -m bmc_detectron.tools.estimate_scale \
    --dataset bccd_train --output "$RUN/training_profile.json" --config-file "$RUN/config.yaml"
  for mode in plain auto; do
    extra=(); [[ $mode == auto ]] && extra=(--auto-scale)
    # a finished count is kept (REDO=1 counts again)
    [[ -f "output/pbc_count_$mode/summary.json" && -z "${REDO:-}" ]] || \
    "$PY" -m bmc_detectron.tools.count --detector-config "$RUN/config.yaml" \
      --detector-weights "$RUN/model_final.pth" --detector-classes WBC \
      --classifier-config configs/recognition/cell_classifier_R_18_pbc_cpu.yaml \
      --classifier-weights "$CLS/model_final.pth" --input "$DATASETS/pbc_wbc/val/images" \
      --output "output/pbc_count_$mode" --no-progress --device cpu --overwrite "${extra[@]}"
    "$PY" -m bmc_detectron.tools.count_eval --report "output/pbc_count_$mode" \
      --dataset pbc_marrow_val > /dev/null
  done
  {
    echo "# Counting real cells of another lab: PBC val, detect (BCCD) + recognise (PBC)"
    echo
    echo "Generated by \`PHASE=pbc bash studies/results.sh\` on $(date -I). Detector: the PAN model"
    echo "of the model selection, seed 0, trained on BCCD \`train\` only (another microscope, another"
    echo "stain, another pixel size); only its \`WBC\` detections are counted (\`--detector-classes"
    echo "WBC\`). Classifier: the PBC cell classifier (\`$CLS\`). Truth: the expert box and type of"
    echo "each of the 300 PBC val images (\`pbc_marrow_val\`). Each image holds one white cell, so the"
    echo "true differential is 10 % for each of the ten types present."
    for mode in plain auto; do
      echo
      [[ $mode == plain ]] && echo "## As the images come (no scale handling)" \
        || echo "## With red cells as a ruler (\`--auto-scale\`)"
      echo
      "$PY" -c "import json; s = json.load(open('output/pbc_count_$mode/summary.json'))['scale']
r = s.get('red_cells') or {}
print(f\"Scale used: {s.get('source')}; fields resized by {s.get('factor')}; red cells {r.get('median_px')} px median\",
      f\"({r.get('relative_to_training')} x the training images'), spread {r.get('spread')}\")"
      echo
      tail -n +3 "output/pbc_count_$mode/count_eval.md"
    done
  } > docs/results/recognition/RESULTS_pbc_count.md
fi

# One stage or two on real cells (BCCD test): the PAN detector of the model selection (3 classes,
# seed 0, BCCD train) alone vs the same PAN as a class-agnostic detector + a crop classifier, both
# trained on BCCD train (STAGES: their run folders).
if [[ $PHASE == stages_bccd ]]; then
  SELECT=${SELECT:-output/select_bccd_bf16}
  STAGES=${STAGES:-output/stages_bccd}
  ONE="$SELECT/runs/retinanet_R_18_PAN_cpu/seed0"
  "$PY" -m studies.stages.compare_stages --dataset bccd_test \
    --one-stage-config "$ONE/config.yaml" --one-stage-weights "$ONE/model_final.pth" \
    --detector-config "$STAGES/detector/config.yaml" \
    --detector-weights "$STAGES/detector/model_final.pth" \
    --classifier-config "$STAGES/classifier/config.yaml" \
    --classifier-weights "$STAGES/classifier/model_final.pth" \
    --output output/stages_bccd_report --report docs/results/stages/RESULTS_stages_bccd.md \
    --train-command "OUT=$SELECT TASKS=retinanet_R_18_PAN_cpu:0 bash studies/selection/model_selection.sh" \
    --train-command "python train_net.py --config-file configs/cpu/agnostic/retinanet_R_18_PAN_agnostic_bccd_train_cpu.yaml OUTPUT_DIR $STAGES/detector" \
    --train-command "python train_net.py --config-file configs/recognition/cell_classifier_R_18_bccd_cpu.yaml OUTPUT_DIR $STAGES/classifier"
fi
