"""Benchmark 5: entropy-coding overhead (actual rANS bits vs the model's estimate -sum log2 p of
the rounded latent) and codec throughput (compress / decompress per frame, 1 thread).

    python bench/entropy_coding.py [--backbone efficientnet_lite0] [--checkpoint PATH]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from common import heldout_frames, median_ms, write_results
from fsplit_ros.runtime import Deployment, OnboardEncoder


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--checkpoint", default="default")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dep = Deployment.load(args.backbone, bottleneck=args.checkpoint)
    if dep.bottleneck is None:
        raise SystemExit("no bottleneck checkpoint: train one (fsplit-train) or pass --checkpoint")
    bn = dep.bottleneck
    enc = OnboardEncoder(dep)
    frames = [enc.prepare(f) for f in heldout_frames(20)]
    actual, estimate = [], []
    for f in frames:
        z = bn.g_a(f.tensor)
        strings = bn.entropy_bottleneck.compress(z)
        actual.append(8 * len(strings[0]))
        _, likelihoods = bn.entropy_bottleneck(z, training=False)
        estimate.append(float(-torch.log2(likelihoods).sum()))
    actual, estimate = np.array(actual), np.array(estimate)
    z = bn.g_a(frames[0].tensor)
    strings, shape = bn.entropy_bottleneck.compress(z), z.shape[-2:]
    comp = median_ms(lambda: bn.entropy_bottleneck.compress(z), repeats=30)
    decomp = median_ms(lambda: bn.entropy_bottleneck.decompress(strings, shape), repeats=30)
    enc_ms = median_ms(lambda: bn.g_a(frames[0].tensor), repeats=30)
    dec_ms = median_ms(lambda: bn.g_s(bn.entropy_bottleneck.decompress(strings, shape)), repeats=30)
    latent = tuple(z.shape[1:])
    md = "\n".join([
        f"# Entropy coding ({args.backbone}, latent {latent}, 1 thread)\n",
        f"Checkpoint metadata: beta={dep.bottleneck_metadata.get('beta')}, steps={dep.bottleneck_metadata.get('steps')}\n",
        "| metric | value |", "|---|---|",
        f"| mean actual bytes/frame | {actual.mean() / 8:.0f} |",
        f"| mean estimated bytes/frame (-sum log2 p) | {estimate.mean() / 8:.0f} |",
        f"| overhead actual/estimate (median over {len(frames)} frames) | {np.median(actual / estimate):.4f} |",
        f"| rANS compress ms | {comp:.2f} |", f"| rANS decompress ms | {decomp:.2f} |",
        f"| symbols/s compress | {np.prod(latent) / comp * 1e3 / 1e6:.1f} M |",
        f"| symbols/s decompress | {np.prod(latent) / decomp * 1e3 / 1e6:.1f} M |",
        f"| g_a (onboard analysis) ms | {enc_ms:.2f} |", f"| decompress + g_s (edge) ms | {dec_ms:.2f} |",
    ])
    write_results(f"entropy_coding_{args.backbone}", md, {"actual_bits": actual.tolist(),
                                                          "estimated_bits": estimate.tolist(),
                                                          "compress_ms": comp, "decompress_ms": decomp})


if __name__ == "__main__":
    main()
