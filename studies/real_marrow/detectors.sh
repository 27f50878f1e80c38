#!/usr/bin/env bash
# Detectors of crowded real cells (issue 24, section 2): the class-agnostic full model (also with
# the scanner augmentation of issue 31) and detectron2's RetinaNet trained on the real-cell
# composites, and the full model with the refinement stage chosen in issue 25, then measured on
# their val split and on BCCD test's white cells (studies/real_marrow/detectors.py). Resumable: a
# finished run is skipped, an interrupted one continues from its last checkpoint. One thread per
# run.
#
#   bash studies/real_marrow/detectors.sh            # train what is missing, then the page
#   REPORT=1 bash studies/real_marrow/detectors.sh   # only the page, from the runs that exist
#
# Settings (environment): OUT (runs root, default output/marrow_real), PY, THREADS, NAMES.
# Needs the composites: `bmc marrow-fields` (about 5 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/marrow_real}
THREADS=${THREADS:-1}
NAMES=${NAMES:-retinanet_R_18_full_agnostic_marrow_real_cpu d2_retinanet_R_18_FPN_agnostic_marrow_real_cpu retinanet_R_18_full_agnostic_marrow_real_SCANNER_cpu retinanet_R_18_chosen_agnostic_marrow_real_cpu}
if [[ -z "${REPORT:-}" ]]; then
  for name in $NAMES; do
    [[ -f "$OUT/$name/model_final.pth" ]] && continue
    OMP_NUM_THREADS=$THREADS "$PY" train_net.py --resume \
      --config-file "configs/cpu/agnostic/$name.yaml" \
      OUTPUT_DIR "$OUT/$name" DATALOADER.NUM_WORKERS 1 < /dev/null
  done
fi
# shellcheck disable=SC2086
OMP_NUM_THREADS=$THREADS "$PY" -m studies.real_marrow.detectors --runs "$OUT" --names $NAMES
