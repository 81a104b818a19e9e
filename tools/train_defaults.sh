#!/usr/bin/env bash
# Trains the bottleneck checkpoints shipped in fsplit_ros/weights/ (the exact commands; CPU, 2 cores).
#
# Budget: ~0.35 s/step (Lite0, "head" encoder, batch 16, 112x112 training patches) on 2 CPU cores,
# so each sweep trains the config's middle rate point (betas: [low, mid, high]) from its
# head-initialised start and fine-tunes the other two from it (--init-from). The plain (no
# saliency) Lite0 and NanoDet sweeps are the ablations for the saliency comparison (not in the default
# list: SWEEPS="nanodet_plain").
#   bash tools/train_defaults.sh            # all four sweeps into runs/defaults/ (~1.5 hours)
#   SWEEPS="nanodet" bash tools/train_defaults.sh            # only some of them
#   STEPS=3000 FINETUNE=1000 bash tools/train_defaults.sh --quiet   # options go to fsplit-train
# NanoDet (416 input, 208x208 patches) takes ~0.75 s/step here.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
OUT=${OUT:-runs/defaults}
STEPS=${STEPS:-1500}          # steps at the middle beta from the head-initialised start
FINETUNE=${FINETUNE:-600}     # warm-started steps at the other two

sweep() {   # sweep <config> <out> [extra args...]: the config's middle beta, then the other two from it
  local config=$1 out=$2; shift 2
  local backbone low mid high
  read -r backbone low mid high < <(python -c "import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); \
print(c['backbone'], *['%g' % b for b in c['betas']])" "$config")
  python -m fsplit_ros.cli.train "$config" --betas "$mid" --steps "$STEPS" --out "$out" --resume "$@"
  python -m fsplit_ros.cli.train "$config" --betas "$low" "$high" --steps "$FINETUNE" --out "$out" --resume \
    --init-from "$out/${backbone}_bottleneck_beta${mid}.pt" "$@"
}

SWEEPS=${SWEEPS:-"lite0 lite0_plain mobilenetv2 nanodet"}   # + nanodet_plain: the detector's ablation
for name in $SWEEPS; do
  case $name in
    lite0) sweep config/train_lite0.yaml "$OUT/efficientnet_lite0" "$@" ;;
    lite0_plain) sweep config/train_lite0.yaml "$OUT/efficientnet_lite0_plain" --no-saliency "$@" ;;
    mobilenetv2) sweep config/train_mobilenetv2.yaml "$OUT/mobilenetv2" "$@" ;;
    nanodet) sweep config/train_nanodet.yaml "$OUT/nanodet" "$@" ;;
    nanodet_plain) sweep config/train_nanodet.yaml "$OUT/nanodet_plain" --no-saliency "$@" ;;
    *) echo "unknown sweep '$name' (lite0 lite0_plain mobilenetv2 nanodet nanodet_plain)" >&2; exit 2 ;;
  esac
done
