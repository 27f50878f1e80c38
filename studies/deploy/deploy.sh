#!/usr/bin/env bash
# Deployment page (needs `make demo` first): ONNX Runtime vs PyTorch (float32 and the models' own
# bf16), and the speed of counting a 100-field case of 640x480 fields; the page is
# docs/results/deploy/RESULTS_deploy.md (written by studies/deploy/page.py).
#
#   bash studies/deploy/deploy.sh
#
# Settings (environment): PY (interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
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
"$PY" -m studies.deploy.page --fp32 output/onnx_fp32 --own output/onnx_own \
  --case output/case100/report --wall-s "$wall" --output docs/results/deploy/RESULTS_deploy.md
