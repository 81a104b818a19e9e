"""fsplit-train: train FrankenSplit bottlenecks (head distillation), one checkpoint per beta.

    fsplit-train config/train_lite0.yaml                          # the config's beta sweep
    fsplit-train config/train_lite0.yaml --steps 600 --betas 0.02 --out runs/try
    fsplit-train config/train_lite0.yaml --resume                 # continue an interrupted run
    fsplit-train config/train_lite0.yaml --no-saliency            # plain FS-FP (g1=1, g2=0)
    fsplit-train config/train_lite0.yaml --device cuda --workers 8
    fsplit-train config/train_lite0_deep.yaml --set encoder_lr=0 --set pca_init_step=1.6   # any key

Command-line options override the YAML file. Outputs in --out (default runs/train/<backbone>):
<backbone>_bottleneck_beta<beta>.pt (load with fsplit_ros.bottleneck.load_bottleneck, or copy to
fsplit_ros/weights/<backbone>_bottleneck.pt to ship it), summary.json (the rate point of each
beta on the held-out frames), and beta<beta>/ (log.jsonl, state.pt for --resume).
"""
from __future__ import annotations

import argparse
import shlex
import sys

import yaml

from fsplit_ros.datasets.frames import FrameSourceError
from fsplit_ros.models.weights import WeightsNotFound
from fsplit_ros.training.config import load_config
from fsplit_ros.training.trainer import TrainingStateError, train_sweep


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fsplit-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML training config (config/train_lite0.yaml, ...)")
    ap.add_argument("--steps", type=int, help="training steps per beta")
    ap.add_argument("--out", dest="out_dir", help="output directory")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the saved trainer state of each beta (up to --steps)")
    ap.add_argument("--betas", type=float, nargs="+", help="rate weights to train, one checkpoint each")
    ap.add_argument("--no-saliency", dest="saliency", action="store_const", const=False,
                    help="plain feature MSE (FS-FP): no Grad-CAM weighting")
    ap.add_argument("--transform-stride", type=int, choices=[1, 2, 4],
                    help="'head' encoder: 2 halves the latent grid, 4 ('linear' transform) quarters it "
                         "(config key transform_stride)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--lr-schedule", choices=["cosine", "constant"],
                    help="cosine decay over --steps (resuming with more steps stretches it) or constant")
    ap.add_argument("--init-from", metavar="CHECKPOINT",
                    help="start every beta from this bottleneck checkpoint (warm-started sweep)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--workers", type=int, help="data loader processes")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--train", dest="train_sources", nargs="+", metavar="PATH",
                    help="training videos / images / image folders instead of the default corpus")
    ap.add_argument("--heldout", dest="heldout_sources", nargs="+", metavar="PATH",
                    help="held-out videos / images / image folders (never trained on), or family:A / family:B")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="any other config key, the value read as YAML (repeatable), e.g. "
                         "--set encoder_lr=0 --set pca_init_step=1.6: ablations without a config file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def parse_settings(settings: list[str]) -> dict:
    """--set KEY=VALUE pairs -> {key: YAML value}; unknown keys are refused by load_config."""
    out = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set encoder_lr=0")
        out[key.strip()] = yaml.safe_load(value)
    return out


def config_from_args(args: argparse.Namespace):
    """The config file, then --set values, then explicit flags. A flag left unset must not undo a
    --set of the same key (`--set init_from=...` was lost to --init-from's default)."""
    flags = {k: v for k, v in vars(args).items()
             if k not in ("config", "resume", "quiet", "settings") and v is not None}
    return load_config(args.config, **{**parse_settings(args.settings), **flags})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"fsplit-train: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["fsplit-train", *(sys.argv[1:] if argv is None else argv)])
    try:
        results = train_sweep(cfg, resume=args.resume, progress=not args.quiet, command=command)
    except (TrainingStateError, FrameSourceError, WeightsNotFound) as exc:
        print(f"fsplit-train: {exc}", file=sys.stderr)
        return 2
    # a classifier's fidelity is top-1 agreement, a detector's the fidelity mAP@0.5 (trainer.evaluate)
    print(f"{'beta':>8} {'bytes/img':>10} {'bits/img':>9} {'held-out mse':>13} {'fidelity':>9}  checkpoint")
    for r in results:
        ev = r.metadata.get("heldout", {}) if r.metadata else {}
        fidelity = ev.get("top1_agreement", ev.get("fidelity_map50", float("nan")))
        print(f"{r.beta:8g} {ev.get('bytes_per_image', float('nan')):10.0f} "
              f"{ev.get('bits_per_image', float('nan')):9.0f} {ev.get('mse', float('nan')):13.4g} "
              f"{fidelity:9.3f}  {r.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
