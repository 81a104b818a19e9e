#!/usr/bin/env bash
# Rate vs top-1 agreement on the held-out set for the checkpoints trained by tools/train_defaults.sh
# (every runs/defaults/<sweep>/<backbone>_bottleneck_beta*.pt) against JPEG/WebP q10..95, PNG and the
# raw split tensors. Writes bench/results/rate_accuracy/<backbone>/rate_accuracy.{json,csv,png}.
#   bash tools/evaluate_defaults.sh            # ~5 minutes per backbone on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
RUNS=${RUNS:-runs/defaults}
OUT=${OUT:-bench/results/rate_accuracy}
shopt -s nullglob
for backbone in efficientnet_lite0 mobilenetv2; do
  checkpoints=("$RUNS"/*/"${backbone}"_bottleneck_beta*.pt)
  if [ ${#checkpoints[@]} -eq 0 ]; then
    echo "no checkpoints for $backbone under $RUNS: baselines only"
  fi
  python -m fsplit_ros.cli.evaluate --backbone "$backbone" --out "$OUT/$backbone" \
    --checkpoints "${checkpoints[@]}"
done
