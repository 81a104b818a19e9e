#!/usr/bin/env bash
# Fidelity mAP vs bytes for the COCO detector (NanoDet-g) on the held-out frames: raw split tensors,
# letterboxed and whole-frame JPEG/WebP, and any detector bottleneck checkpoints under
# $RUNS/*/nanodet_bottleneck_beta*.pt. Writes bench/results/detection_fidelity/nanodet/
# detection_fidelity.{md,json,csv,png}.
#   bash tools/evaluate_detection.sh           # ~10 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
RUNS=${RUNS:-runs/defaults}
OUT=${OUT:-bench/results/detection_fidelity/nanodet}
shopt -s nullglob
checkpoints=("$RUNS"/*/nanodet_bottleneck_beta*.pt)
mkdir -p "$OUT"
python -m fsplit_ros.cli.evaluate --backbone nanodet --out "$OUT" --checkpoints "${checkpoints[@]}"
