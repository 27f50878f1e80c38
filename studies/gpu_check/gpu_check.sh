#!/usr/bin/env bash
# The GPU check, prepared for the few minutes a lent CUDA machine gives (tools/gpu_check): DCN on
# torchvision's CUDA kernel against the CPU path, float32 vs AMP training steps, the R-50 reference
# and full model trained with AMP on BCCD for the longest schedule that fits, their AP, latency
# and memory, and the same weights evaluated on the CPU. Three steps, two machines:
#
#   bash studies/gpu_check/gpu_check.sh prepare          # here, where PyPI is reachable: fills .gpu/
#   # on the lent machine (the session's device tool), one call with carry [".gpu"]:
#   #   command: bash studies/gpu_check/gpu_check.sh run      timeout_s: 570
#   bash studies/gpu_check/gpu_check.sh report DIR       # here: docs/results/gpu_check/RESULTS_gpu.md from DIR/gpu_check.json
#
# .gpu/ (git-ignored, ~12 MB) holds what the lent machine lacks and cannot download: wheels of
# detectron2's pure-Python code and its dependencies for that machine's Python, and a copy of
# BCCD from $BMC_SHARED_DATASETS. `run` installs them (and this package) into /tmp/site, writes
# $OUT/gpu_check.json after every step (a lease cut short still returns what was measured) and
# $OUT/gpu_check.md. Settings (environment): PYVER (the lent machine's Python, 3.12), BUDGET_S
# (seconds for the check, 480), DEVICE (cuda; cpu makes a slow dry run), PY (interpreter here).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-}
CARRY=.gpu
PYVER=${PYVER:-3.12}
DEPS="pycocotools==2.0.11 yacs==0.1.8 termcolor==3.3.0 omegaconf==2.3.1 hydra-core==1.3.8"
SDISTS="fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3"
D2_SPEC=${D2_SPEC:-sal-detectron2==0.7.2}

prepare() {
  local py=${PY:-.venv/bin/python} pip
  pip=("$py" -m pip --disable-pip-version-check -q)
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/d2" "$CARRY/datasets"
  # binary wheels for the lent machine's Python (manylinux x86-64)
  # shellcheck disable=SC2086
  "${pip[@]}" download --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$CARRY/wheels" $DEPS
  # pure-Python packages published as source only: built into py3 wheels here
  # shellcheck disable=SC2086
  "${pip[@]}" wheel --no-deps -w "$CARRY/wheels" $SDISTS
  # detectron2's Python code (its compiled _C is for Python 3.10 and is not used)
  "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    -d "$CARRY/d2" "$D2_SPEC"
  local data
  data=$("$py" -c "from bmc_detectron.data.paths import shared_datasets_root as r; print(r())")
  [[ -d "$data/bccd" ]] || { echo "no BCCD under $data (set BMC_SHARED_DATASETS)" >&2; exit 1; }
  cp -r "$data/bccd" "$CARRY/datasets/"
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  du -sh "$CARRY"
}

run() {
  local site=${SITE:-/tmp/site} py=${PY:-python3} out=${OUT:-output/gpu_check}
  [[ -d "$CARRY/wheels" ]] || { echo "no $CARRY/: run 'bash studies/gpu_check/gpu_check.sh prepare' first and carry it" >&2; exit 1; }
  local pip=("$py" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install --no-index --no-deps --no-compile --target "$site" "$CARRY"/wheels/*.whl
  "${pip[@]}" install --no-index --no-deps --no-compile --only-binary=:all: --python-version 3.10 \
    --implementation cp --target "$site" --upgrade "$CARRY"/d2/*.whl 2>&1 | grep -v "is ignored" || true
  "${pip[@]}" install --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
  export PYTHONPATH=$site BMC_SHARED_DATASETS=$PWD/$CARRY/datasets PYTHONUNBUFFERED=1
  mkdir -p "$out" && out=$(cd "$out" && pwd)
  local repo=$PWD
  nvidia-smi > "$out/nvidia_smi.txt" 2>&1 || true
  # run from outside the checkout so that the installed package is the one imported
  (cd /tmp && "$py" -c "import bmc_detectron as b; print('[gpu_check] package:', b.__file__)" \
   && "$py" -m studies.gpu_check.gpu_check --output "$out" --work-dir /tmp/gpu_check \
     --device "${DEVICE:-cuda}" --budget-s "${BUDGET_S:-480}" \
     --configs "$repo/configs/retinanet_R_50_FPN_1x.yaml" "$repo/configs/retinanet_R_50_full_1x.yaml" \
     --dcn-config "$repo/configs/retinanet_R_50_PAN_SE_DCN_1x.yaml" "$@") 2>&1 \
    | tee "$out/gpu_check.log"
}

case "$MODE" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  report)
    [[ -n "${2:-}" ]] || { echo "usage: bash studies/gpu_check/gpu_check.sh report DIR" >&2; exit 2; }
    "${PY:-.venv/bin/python}" -m studies.gpu_check.gpu_check --report-from "$2/gpu_check.json" \
      --report docs/results/gpu_check/RESULTS_gpu.md ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
