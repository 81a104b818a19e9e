#!/usr/bin/env bash
# Fidelity mAP vs bytes for the COCO detector (NanoDet-g) on the held-out frames: raw split tensors,
# letterboxed and whole-frame JPEG/WebP, and the detector bottleneck checkpoints under
# $RUNS/*/nanodet_bottleneck_beta*.pt (tools/train_defaults.sh), else the shipped one.
# Writes bench/results/detection_fidelity/nanodet/detection_fidelity.{md,json,csv,png}.
#   bash tools/evaluate_detection.sh           # ~10 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
RUNS=${RUNS:-runs/defaults}
OUT=${OUT:-bench/results/detection_fidelity/nanodet}
shopt -s nullglob
checkpoints=("$RUNS"/*/nanodet_bottleneck_beta*.pt)
if [ ${#checkpoints[@]} -eq 0 ] && [ -f fsplit_ros/weights/nanodet_bottleneck.pt ]; then
  echo "no checkpoints under $RUNS: evaluating the shipped fsplit_ros/weights/nanodet_bottleneck.pt"
  checkpoints=(fsplit_ros/weights/nanodet_bottleneck.pt)
fi
mkdir -p "$OUT"
python -m fsplit_ros.cli.evaluate --backbone nanodet --out "$OUT" --checkpoints "${checkpoints[@]}"
