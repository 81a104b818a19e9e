"""Fit a decoder for another edge model to a frozen shared encoder, and measure it as it trains.

    python -m fsplit_ros.training.shared_decoder --target efficientnet_lite2 --out runs/shared_lite2 \
        [--encoder efficientnet_lite0] [--steps 600] [--resume]

The encoder is the shipped bottleneck of `--encoder` (its frozen layers, linear transform and prior:
what the robot sends). For every training frame the rounded latent the edge would decode and the
target model's own features and logits (on its own preprocessing of the same frame) are computed
once; the decoder then trains on them with the bottleneck work's objective: a relative MSE on the
features plus KD (KL to the target's logits) through the target's frozen tail. Every `--eval-every`
steps it is scored on held-out families A and B (top-1 agreement with the unmodified target on its
own preprocessing, Wilson interval): the curve of fidelity vs decoder steps. The payload bytes are
the encoder's, measured with the real rANS coder on the held-out frames.

With `--views K` the training pairs also hold K augmented views of every training frame (random
resized crops, flips, colour jitter, object cut-outs: the bottleneck trainer's augmentation), each
seen by *both* networks (the encoder's input and the target's are resized from the same view): the
"patient and consistent teacher" of distillation (Beyer et al., CVPR 2022). Without views the decoder
learns the training frames by heart (88 % agreement on them, 24 % held out).

Resumable: the state (decoder, optimiser, curve) is saved every `--checkpoint-every` steps and at
the end; `--resume` continues from it (the cached features are reused: `--cache`)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsplit_ros.bottleneck.shared import SharedDecoder, SharedDecoderConfig, save_shared_decoder
from fsplit_ros.evaluation.intervals import wilson_interval
from fsplit_ros.splitting import map_stride

STATE = "state.pt"


def _view_augmentation():
    """The deep bottleneck recipes' augmentation (config/train_lite0_deep.yaml), crops no smaller
    than a tenth of the frame."""
    from fsplit_ros.datasets.frames import Augmentation
    return Augmentation(crop_scale=(0.1, 1.0), grayscale_p=0.1, overlay_p=0.5, mixup_p=0.1, cutmix_p=0.1)


@dataclass
class Pairs:
    """Per frame: the rounded shared latent, the target's features at its injection point, its logits."""
    latents: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    bytes: list[int]


def _frames(sources, limit: int) -> list:
    """Decoded frames (`Frame`s), evenly thinned to `limit`."""
    from fsplit_ros.datasets.frames import load_frames
    frames = load_frames(sources)
    if limit and len(frames) > limit:
        keep = np.linspace(0, len(frames) - 1, limit).round().astype(int)
        frames = [frames[i] for i in keep]
    return frames


def _concat(parts: list[Pairs]) -> Pairs:
    return Pairs(torch.cat([p.latents for p in parts]), torch.cat([p.features for p in parts]),
                 torch.cat([p.logits for p in parts]), [b for p in parts for b in p.bytes])


@torch.no_grad()
def compute_pairs(encoder_dep, target_dep, injection: int, frames: list, batch: int = 16,
                  measure_bytes: bool = False) -> Pairs:
    """Each frame through each network's own deployed preprocessing (what the edge will see)."""
    return _pairs(encoder_dep, target_dep, injection, [
        (lambda f=f: (encoder_dep.model_pixels(f.rgb), target_dep.model_pixels(f.rgb))) for f in frames],
        batch, measure_bytes)


@torch.no_grad()
def compute_view_pairs(encoder_dep, target_dep, injection: int, frames: list, views: int,
                       augmentation, overlays=(), seed: int = 0, batch: int = 16) -> Pairs:
    """`views` augmented views of every frame; both networks see the same view, each resized to its
    own input size (a pure function of `seed`: a resumed run rebuilds the same pairs)."""
    import cv2

    from fsplit_ros.datasets.frames import FrameDataset
    size = max(encoder_dep.input_size, target_dep.input_size)
    dataset = FrameDataset(frames, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size, augment=True,
                           augmentation=augmentation, overlays=overlays)

    def at(pixels: np.ndarray, side: int) -> np.ndarray:
        return pixels if side == size else cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)

    def view(key):
        pixels = (dataset[key]["image"] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return at(pixels, encoder_dep.input_size), at(pixels, target_dep.input_size)

    n = len(frames)
    keys = [(i, seed * 1_000_003 + v * n + i) for v in range(views) for i in range(n)]
    return _pairs(encoder_dep, target_dep, injection, [(lambda key=key: view(key)) for key in keys], batch)


def _pairs(encoder_dep, target_dep, injection: int, makers: list, batch: int,
           measure_bytes: bool = False) -> Pairs:
    """makers: per item, a function returning (encoder's pixels, target's pixels)."""
    bottleneck = encoder_dep.bottleneck
    head, tail = target_dep.splittable.head(injection), target_dep.splittable.tail(injection)
    latents, features, logits, sizes = [], [], [], []
    for k in range(0, len(makers), batch):
        enc_pixels, tgt_pixels = zip(*(make() for make in makers[k:k + batch]))
        z = bottleneck.g_a(encoder_dep.pixels_to_tensor(np.stack(enc_pixels)))
        latents.append(bottleneck.rounded(z).half())
        if measure_bytes:
            sizes += [len(s) for s in bottleneck.entropy_bottleneck.compress(z)]
        h = head(target_dep.pixels_to_tensor(np.stack(tgt_pixels)))
        features.append(h.half())
        logits.append(tail(h).half())
    return Pairs(torch.cat(latents), torch.cat(features), torch.cat(logits), sizes)


@torch.no_grad()
def agreement(decoder: SharedDecoder, tail, pairs: Pairs, batch: int = 64) -> dict:
    decoder.eval()
    hits = 0
    for k in range(0, len(pairs.latents), batch):
        out = tail(decoder(pairs.latents[k:k + batch].float()))
        hits += int((out.argmax(1) == pairs.logits[k:k + batch].argmax(1)).sum())
    n = len(pairs.latents)
    lo, hi = wilson_interval(hits, n)
    return {"frames": n, "top1_agreement": hits / n, "low": lo, "high": hi}


def train(target: str, out: Path, encoder: str = "efficientnet_lite0", steps: int = 600, batch: int = 32,
          lr: float = 5e-4, kd_weight: float = 1.0, distill_weight: float = 1.0, eval_every: int = 100,
          checkpoint_every: int = 100, train_frames: int = 2000, heldout_frames: int = 600,
          resume: bool = False, cache: Path | None = None, threads: int = 2, seed: int = 0,
          views: int = 0, width: int = 192, progress: bool = True) -> dict:
    from fsplit_ros.datasets.frames import default_corpus, heldout_families
    from fsplit_ros.runtime import Deployment

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    enc = Deployment.load(encoder)
    if enc.bottleneck is None:
        raise ValueError(f"{encoder} has no shipped bottleneck to share: pass --encoder with one")
    tgt = Deployment.load(target, bottleneck=None)
    if tgt.task.name != enc.task.name:
        raise ValueError(f"{target} does {tgt.task.name} on its own input geometry; this fits decoders for "
                         f"models of the encoder's task ({enc.task.name}) only")
    injection = deep_injection(tgt)
    tail = tgt.splittable.tail(injection)
    tail.eval().requires_grad_(False)

    cache = cache or out / "pairs.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=False)
        if blob.get("views", views) != views:
            raise ValueError(f"{cache} holds {blob['views']} views per frame, not {views}: pass --views "
                             f"{blob['views']} or another --cache")
        sets = {k: Pairs(**v) for k, v in blob.get("sets", blob).items()}
        say(f"features from {cache}")
    else:
        train_sources, _ = default_corpus()
        families = heldout_families()
        t0 = time.time()
        frames = _frames(train_sources, train_frames)
        sets = {"train": compute_pairs(enc, tgt, injection, frames)}
        if views:
            from fsplit_ros.datasets.frames import load_overlays, overlay_paths
            sets["train"] = _concat([sets["train"], compute_view_pairs(
                enc, tgt, injection, frames, views, _view_augmentation(), load_overlays(overlay_paths()), seed)])
            say(f"{views} views of {len(frames)} frames in {time.time() - t0:.0f} s")
        for name, sources in families.items():
            sets[name] = compute_pairs(enc, tgt, injection, _frames(sources, heldout_frames), measure_bytes=True)
        torch.save({"views": views, "sets": {k: vars(v) for k, v in sets.items()}}, cache)
        say(f"features of {sum(len(p.latents) for p in sets.values())} frames in {time.time() - t0:.0f} s")
    trainset = sets["train"]
    heldout = {k: v for k, v in sets.items() if k != "train"}

    c, side = enc.bottleneck.config.latent_channels, trainset.latents.shape[-1]
    target_shape = trainset.features.shape[1:]
    config = SharedDecoderConfig(encoder_hash=enc.bottleneck_hash, encoder_backbone=encoder,
                                 latent_channels=c, latent_side=side, backbone=target, injection_split=injection,
                                 target_channels=target_shape[0], target_side=target_shape[-1], width=width)
    decoder = SharedDecoder(config)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    feature_scale = float(trainset.features.float().pow(2).mean())
    state_path = out / STATE
    step, curve = 0, []
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        step, curve = state["step"], state["curve"]
        say(f"resumed at step {step}")
    else:
        residual = decoder.fit_linear(trainset.latents, trainset.features)
        say(f"least-squares start: relative residual {residual:.3f} on the training pairs")
        curve.append({"step": 0, **{f: agreement(decoder, tail, p) for f, p in heldout.items()}})
        say("step 0: " + ", ".join(f"{f} {r['top1_agreement']:.3f}" for f, r in curve[-1].items() if f != "step"))

    def save_state():
        torch.save({"decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "curve": curve}, state_path)

    gen = torch.Generator().manual_seed(seed + step)
    n = len(trainset.latents)
    t0 = time.time()
    while step < steps:
        decoder.train()
        idx = torch.randint(0, n, (batch,), generator=gen)
        z, h, teacher = trainset.latents[idx].float(), trainset.features[idx].float(), trainset.logits[idx].float()
        for group in opt.param_groups:   # cosine to 5 % of lr
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        h_tilde = decoder(z)
        loss = distill_weight * (h_tilde - h).pow(2).mean() / feature_scale
        if kd_weight > 0:
            log_p, log_q = teacher.log_softmax(1), tail(h_tilde).log_softmax(1)
            loss = loss + kd_weight * (log_p.exp() * (log_p - log_q)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        step += 1
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, **{f: agreement(decoder, tail, p) for f, p in heldout.items()}})
            say(f"step {step} ({time.time() - t0:.0f} s): loss {loss.item():.4f}, "
                + ", ".join(f"{f} {r['top1_agreement']:.3f}" for f, r in curve[-1].items() if f != "step"))
        if step % checkpoint_every == 0 or step == steps:
            save_state()
    summary = {"encoder": encoder, "encoder_hash": enc.bottleneck_hash, "target": target,
               "injection_split": injection, "steps": steps, "batch": batch, "lr": lr, "kd_weight": kd_weight,
               "train_pairs": n, "views": views, "width": width, "curve": curve,
               "payload_bytes": {f: float(np.mean(p.bytes)) for f, p in heldout.items() if p.bytes}}
    path = out / f"{target}_from_{encoder}.pt"
    summary["decoder_hash"] = save_shared_decoder(decoder, path, metadata={
        "heldout": curve[-1], "steps": steps, "trained_with": "python -m fsplit_ros.training.shared_decoder"})
    summary["decoder"] = str(path)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def deep_injection(dep) -> int:
    """The first stride-32 split point: where the shipped deep bottlenecks inject (Lite0 blocks.5.0)."""
    for p in dep.split_points:
        if map_stride(dep.input_size, p.shape[-1]) == 32:
            return p.index
    raise ValueError(f"{dep.name} has no stride-32 split point")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="the edge model to fit a decoder for")
    ap.add_argument("--encoder", default="efficientnet_lite0", help="backbone whose shipped bottleneck is shared")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--train-frames", type=int, default=2000)
    ap.add_argument("--heldout-frames", type=int, default=600)
    ap.add_argument("--views", type=int, default=0,
                    help="augmented views per training frame, seen by both networks (0: the frames only)")
    ap.add_argument("--width", type=int, default=192, help="the decoder's hidden channels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--cache", type=Path, default=None, help="features file (default OUT/pairs.pt)")
    args = ap.parse_args(argv)
    summary = train(args.target, args.out, args.encoder, args.steps, args.batch, args.lr, args.kd_weight,
                    eval_every=args.eval_every, checkpoint_every=args.eval_every, train_frames=args.train_frames,
                    heldout_frames=args.heldout_frames, resume=args.resume, cache=args.cache, threads=args.threads,
                    views=args.views, width=args.width)
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
