"""Benchmark 2: onboard cost per frame on this CPU, 1 and 2 threads, side by side in one run:
the FrankenSplit encoder (g_a + rANS), the split heads (+ 8-bit/zlib), the whole model (local), and
JPEG q95 encoding (of the 224 crop and of the whole camera frame). Medians; ratios vs local.

    python bench/onboard_cost.py [--backbone efficientnet_lite0] [--checkpoints CKPT ...]

--checkpoints adds one row per bottleneck checkpoint (g_a + rANS), timed in the same rounds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import heldout_frames, median_ms, write_results
from fsplit_ros.codecs import ImageCodec
from fsplit_ros.runtime import Deployment, OnboardEncoder


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--checkpoints", nargs="*", default=[], help="more bottleneck checkpoints to time")
    args = ap.parse_args()
    dep = Deployment.load(args.backbone)
    enc = OnboardEncoder(dep)
    others = {Path(c).name: OnboardEncoder(Deployment.load(args.backbone, bottleneck=c))
              for c in args.checkpoints}
    frames = heldout_frames(8)
    prepared = [enc.prepare(f) for f in frames]
    jpeg = ImageCodec("jpeg", 95)
    rows, data = [], {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        i = iter(range(10**9))

        def nxt():
            return prepared[next(i) % len(prepared)]
        costs = {"local (whole model)": median_ms(lambda: enc.predict_local(nxt())),
                 "preprocess (resize+crop+normalise)": median_ms(lambda: enc.prepare(frames[next(i) % len(frames)])),
                 "JPEG q95, 224 crop": median_ms(lambda: jpeg.encode(nxt().crop)),
                 "JPEG q95, whole frame": median_ms(lambda: jpeg.encode(nxt().rgb))}
        if enc.entropy_codec is not None:
            costs["bottleneck (g_a + rANS)"] = median_ms(lambda: enc.encode(nxt(), "bottleneck"))
        for name, other in others.items():
            costs[f"bottleneck {name} (g_a + rANS)"] = median_ms(lambda other=other: other.encode(nxt(), "bottleneck"))
        for index in dep.compressive_split_indices():
            costs[f"split@{index} ({dep.split_point(index).name}) + codec"] = median_ms(
                lambda index=index: enc.encode(nxt(), "split", index))
        data[threads] = costs
    local = {t: data[t]["local (whole model)"] for t in data}
    rows.append("| onboard work | 1 thread ms | x local | 2 threads ms | x local |")
    rows.append("|---|---|---|---|---|")
    for name in data[1]:
        rows.append(f"| {name} | {data[1][name]:.2f} | {data[1][name] / local[1]:.3f} | {data[2][name]:.2f} | "
                    f"{data[2][name] / local[2]:.3f} |")
    note = ("trained" if dep.bottleneck_metadata and dep.bottleneck_metadata.get("steps") else
            "untrained or absent") + " bottleneck"
    md = (f"# Onboard cost per frame ({args.backbone}, {note})\n\nMedians of 15 runs after warm-up on "
          f"{len(frames)} held-out photos (frame sizes {sorted({f.shape[:2] for f in frames})[:3]}...).\n\n"
          + "\n".join(rows))
    write_results(f"onboard_cost_{args.backbone}", md, {"ms": data})


if __name__ == "__main__":
    main()
