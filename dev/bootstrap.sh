#!/usr/bin/env bash
# Creates (or completes) the project's virtual environment, then writes a stamp so that a second
# run costs nothing. A torch / detectron2 that is already importable (a CUDA build, an official
# detectron2 build) is kept: the venv sees the interpreter's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_SPEC=${D2_SPEC:-"sal-detectron2==0.7.2"}
# Optional dependency groups of setup.cfg to install (comma-separated; add new groups here).
EXTRAS=${EXTRAS:-"dev,deploy,serve,cases,wsi,batch,docs"}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV (with access to $PYTHON's site-packages)"
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[bootstrap] keeping $("$PY" -c 'import torch, torchvision as tv; print("torch", torch.__version__, "torchvision", tv.__version__)')"
else
  # torch 2.14.1's x86_64 wheels are CUDA builds: about 5.6 GB in the venv, more while unpacking.
  NEED_GB=${BOOTSTRAP_NEED_GB:-8}
  FREE_GB=$(df -Pk "$VENV" | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "$FREE_GB" -lt "$NEED_GB" ]; then
    echo "[bootstrap] $TORCH_SPEC needs about $NEED_GB GB free; $(df -P "$VENV" | awk 'NR == 2 {print $6}') has $FREE_GB GB." >&2
    echo "[bootstrap] Free some disk (old training runs: delete their intermediate model_0*.pth) and rerun." >&2
    exit 1
  fi
  echo "[bootstrap] installing $TORCH_SPEC (about 5.6 GB; docs/get-started.md says how to use another build)"
  # shellcheck disable=SC2086
  "${PIP[@]}" install --no-cache-dir $TORCH_SPEC
fi

# The package first: it brings detectron2's pure-Python dependencies (fvcore, pycocotools, ...).
echo "[bootstrap] installing bmc-detectron (editable, with extras: $EXTRAS)"
"${PIP[@]}" install -e ".[$EXTRAS]"

if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('detectron2') is None)"; then
  echo "[bootstrap] keeping the detectron2 already installed"
else
  # detectron2's pure-Python code (upstream main of 2024-04-17); its compiled _C is not used.
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "[bootstrap] installing detectron2 ($D2_SPEC) into $SITE"
  "${PIP[@]}" install --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --target "$SITE" --upgrade "$D2_SPEC" 2>&1 | grep -v "is ignored: it is neither" || true
  "$PY" -c "import detectron2" || { echo "[bootstrap] detectron2 install failed" >&2; exit 1; }
fi

"$PY" -c "import bmc_detectron, detectron2, torch; print('[bootstrap] ready: torch', torch.__version__, '| detectron2', detectron2.__version__)"
