#!/usr/bin/env bash
# The deep-injection bottleneck's ablation (config/train_lite0_deep.yaml, train_nanodet_deep.yaml):
# each line adds one lever to the previous one; every run is resumable (--resume) and writes its
# checkpoint and summary.json (the trainer's held-out check, family A) under $OUT/<line>/.
#   pca      principal components only: g_a and g_s (its linear inverse alone) stay at their
#            start (lr 0), the prior is fitted
#   kd_gs    + g_s trained with KD through the frozen tail (encoder_lr 0: the same g_a)
#   kd_all   + g_a trained too (KD + multi-stage feature matching)
#   kd_all_single  kd_all without the multi-stage feature term (feature_weight 0): that lever alone
#   stage2   the pca line's checkpoint with the residual decoder (pca_residual: `--set
#            decoder=residual` on the pca line), g_a and prior frozen (freeze_encoder: identical
#            bytes), g_s fine-tuned with KD + multi-stage
#   bash tools/ablate_deep.sh                        # Lite0, ~25 min on 2 CPU cores
#   MODELS=nanodet LINES="pca" bash tools/ablate_deep.sh
#   PCA_STEP=2.0 LINES=pca bash tools/ablate_deep.sh # another quantization step (a rate point) -> pca_step2.0/
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
OUT=${OUT:-runs/ablate_deep}
MODELS=${MODELS:-lite0}
LINES=${LINES:-"pca kd_gs kd_all"}
PCA_STEP=${PCA_STEP:-}          # empty: the config's pca_init_step
for model in $MODELS; do
  case $model in
    lite0) config=config/train_lite0_deep.yaml ;;
    nanodet) config=config/train_nanodet_deep.yaml ;;
    lite2) config=config/train_lite2_deep.yaml ;;
    *) echo "unknown model '$model' (lite0 nanodet lite2)" >&2; exit 2 ;;
  esac
  for line in $LINES; do
    case $line in
      pca) extra=(--steps 300 --lr 0 --set encoder_lr=0 --set rate_warmup_steps=0 --set decoder=linear) ;;
      kd_gs) extra=(--set encoder_lr=0) ;;
      kd_all) extra=() ;;
      kd_all_single) extra=(--set feature_weight=0) ;;
      stage2)
        start=$(ls "$OUT/$model"/pca_residual/*.pt | head -n 1)
        extra=(--init-from "$start" --set freeze_encoder=true --set rate_warmup_steps=0) ;;
      *) echo "unknown line '$line' (pca kd_gs kd_all kd_all_single stage2)" >&2; exit 2 ;;
    esac
    out="$OUT/$model/$line"
    if [[ -n $PCA_STEP ]]; then extra+=(--set "pca_init_step=$PCA_STEP"); out+="_step$PCA_STEP"; fi
    python -m fsplit_ros.cli.train "$config" --out "$out" --resume "${extra[@]}" "$@"
  done
done
