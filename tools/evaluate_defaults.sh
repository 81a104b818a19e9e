#!/usr/bin/env bash
# Rate vs top-1 agreement on the held-out families for the shipped bottlenecks (or CHECKPOINTS_<backbone>)
# against JPEG/WebP, PNG and the raw split tensors, through the real payload path, Wilson 95 %
# intervals next to every agreement. Writes bench/results/rate_accuracy/<backbone>/<family>/
# rate_accuracy.{md,json,csv,png}. Family A: footage like the training data; B: unlike it (a lab
# camera; needs the corpus: fsplit-data). A checkpoint trained on a family's files is refused.
#   bash tools/evaluate_defaults.sh                         # ~15 minutes per backbone on 2 CPU cores
#   BACKBONES=efficientnet_lite0 FAMILIES=B CHECKPOINTS_efficientnet_lite0="a.pt b.pt" bash tools/evaluate_defaults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
OUT=${OUT:-bench/results/rate_accuracy}
BACKBONES=${BACKBONES:-"efficientnet_lite0 mobilenetv2"}
FAMILIES=${FAMILIES:-"A B"}
QUALITIES=${QUALITIES:-"10 20 30 50 70 90 95"}
for backbone in $BACKBONES; do
  var="CHECKPOINTS_${backbone}"
  read -r -a checkpoints <<< "${!var:-fsplit_ros/weights/${backbone}_bottleneck.pt}"
  for family in $FAMILIES; do
    python -m fsplit_ros.cli.evaluate --backbone "$backbone" --family "$family" --out "$OUT/$backbone/$family" \
      --qualities $QUALITIES --split-codecs uint8-channel+zlib --checkpoints "${checkpoints[@]}"
  done
done
