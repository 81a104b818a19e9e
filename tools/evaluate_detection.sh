#!/usr/bin/env bash
# Fidelity mAP vs bytes for the COCO detector (NanoDet-g) on the held-out families: raw split
# tensors, letterboxed and whole-frame JPEG/WebP, and the shipped bottleneck (or CHECKPOINTS="a.pt
# b.pt"; a checkpoint trained on a family's files is refused). Family A: footage like the training
# data; B: unlike it (a lab camera; needs the corpus: fsplit-data).
# Writes bench/results/detection_fidelity/nanodet/<family>/detection_fidelity.{md,json,csv,png}.
#   bash tools/evaluate_detection.sh                           # B ~14 min, A (MAX_FRAMES=400) ~20 min
#   FAMILIES=B CHECKPOINTS="runs/kd_nanodet/nanodet_bottleneck_beta1.pt fsplit_ros/weights/nanodet_bottleneck.pt" bash tools/evaluate_detection.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
OUT=${OUT:-bench/results/detection_fidelity/nanodet}
FAMILIES=${FAMILIES:-"A B"}
MAX_FRAMES=${MAX_FRAMES:-400}      # family A has 1,061 frames: all of them take ~45 min here
read -r -a checkpoints <<< "${CHECKPOINTS:-fsplit_ros/weights/nanodet_bottleneck.pt}"
for family in $FAMILIES; do
  python -m fsplit_ros.cli.evaluate --backbone nanodet --family "$family" --max-frames "$MAX_FRAMES" \
    --out "$OUT/$family" --checkpoints "${checkpoints[@]}"
done
