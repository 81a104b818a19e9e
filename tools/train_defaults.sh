#!/usr/bin/env bash
# Trains the bottleneck checkpoints shipped in fsplit_ros/weights/ (the exact commands; CPU, 2 cores).
#
# Budget: ~0.35 s/step (Lite0, "head" encoder, batch 16, 112x112 training patches) on 2 CPU cores,
# so each sweep trains one rate point from its head-initialised start (beta 2) and fine-tunes the
# other two from it (--init-from). The plain (no saliency) Lite0 sweep is the ablation for the
# saliency comparison.
#   bash tools/train_defaults.sh            # all three sweeps into runs/defaults/ (~1 hour)
#   STEPS=3000 FINETUNE=1000 bash tools/train_defaults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
OUT=${OUT:-runs/defaults}
STEPS=${STEPS:-1500}          # steps at beta 2 from the head-initialised start
FINETUNE=${FINETUNE:-600}     # warm-started steps at beta 0.5 and 8

sweep() {   # sweep <config> <out> [extra args...]
  local config=$1 out=$2; shift 2
  local backbone; backbone=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['backbone'])" "$config")
  python -m fsplit_ros.cli.train "$config" --betas 2 --steps "$STEPS" --out "$out" --resume "$@"
  python -m fsplit_ros.cli.train "$config" --betas 0.5 8 --steps "$FINETUNE" --out "$out" --resume \
    --init-from "$out/${backbone}_bottleneck_beta2.pt" "$@"
}

sweep config/train_lite0.yaml "$OUT/efficientnet_lite0"
sweep config/train_lite0.yaml "$OUT/efficientnet_lite0_plain" --no-saliency
sweep config/train_mobilenetv2.yaml "$OUT/mobilenetv2"
