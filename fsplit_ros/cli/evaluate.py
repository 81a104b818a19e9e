"""fsplit-eval: rate vs agreement on the held-out frames for FrankenSplit checkpoints and every
baseline (JPEG/WebP 10..95, PNG, raw split tensors), as CSV, JSON and a plot. For a detector
(`--backbone nanodet`): fidelity mAP vs bytes against the unmodified detector, for raw split
tensors, letterboxed and whole-frame JPEG/WebP, and bottleneck checkpoints.

    fsplit-eval --backbone efficientnet_lite0 --checkpoints runs/train/efficientnet_lite0/*.pt --out DIR
    fsplit-eval --backbone nanodet --out bench/results/detection_fidelity/nanodet
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from fsplit_ros.datasets.frames import default_corpus, load_frames
from fsplit_ros.models import DETECTORS
from fsplit_ros.evaluation.rate_accuracy import (JPEG_WEBP_QUALITIES, SPLIT_CODECS, TrainedOnHeldOut,
                                                 evaluate, plot, targets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--checkpoints", nargs="*", default=[], help="FrankenSplit checkpoints (rate points)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-frames", type=int, default=0, help="cap on held-out video frames (0 = all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--qualities", type=int, nargs="+", default=None,
                    help="JPEG/WebP qualities of the image baselines (default: 10..95 for classifiers, "
                         "10 30 50 70 90 95 for detectors)")
    ap.add_argument("--split-codecs", nargs="+", default=None,
                    help="tensor codecs of the raw split-tensor baselines (default: all for classifiers, "
                         "fp16+zlib and uint8-channel+zlib for detectors)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, heldout = default_corpus()
    video_sources = [s for s in heldout if s.kind == "video"]
    photo_paths = {str(s.path) for s in heldout if s.kind == "image"}
    frames = [f.rgb for f in load_frames(video_sources, max_short_side=None)] if video_sources else []
    if args.max_frames:
        frames = frames[::max(1, len(frames) // args.max_frames)][:args.max_frames]
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    import cv2
    photos = [(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), label)
              for p, label in labelled_imagenet_photos() if str(p) in photo_paths]
    if args.backbone in DETECTORS:
        # detection has no labels for the photos either: every held-out frame is scored the same way
        return _evaluate_detector(args, argv, frames + [rgb for rgb, _ in photos], heldout)
    try:
        rows, info = evaluate(args.backbone, [Path(c) for c in args.checkpoints], frames, photos,
                              qualities=args.qualities or JPEG_WEBP_QUALITIES,
                              split_codecs=args.split_codecs or SPLIT_CODECS,
                              heldout_names=[s.path.name for s in heldout])
    except (TrainedOnHeldOut, ValueError, OSError) as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    summary = {"command": " ".join(["fsplit-eval", *(sys.argv[1:] if argv is None else argv)]),
               "backbone": args.backbone, "heldout_sources": [s.describe() for s in heldout],
               **info, "targets": targets(rows), "rows": [r.to_dict() for r in rows]}
    _write_table(out / "rate_accuracy", summary, rows)
    plot(rows, out / "rate_accuracy.png", f"{args.backbone}: rate vs top-1 agreement "
         f"({info['frames'] + info['photos']} held-out frames)")
    print(f"{'method':10s} {'setting':42s} {'bytes':>8s} {'p95':>8s} {'agree':>6s} {'acc':>5s} {'ms':>6s}")
    for r in rows:
        print(f"{r.method:10s} {r.setting[:42]:42s} {r.bytes_mean:8.0f} {r.bytes_p95:8.0f} {100 * r.agreement:6.1f} "
              f"{100 * r.accuracy:5.0f} {r.onboard_ms:6.2f}")
    print(json.dumps(summary["targets"], indent=1))
    return 0


def _write_table(stem: Path, summary: dict, rows) -> None:
    """summary -> STEM.json, rows -> STEM.csv (one column per field)."""
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].to_dict()))
        writer.writeheader()
        writer.writerows(r.to_dict() for r in rows)


def _evaluate_detector(args, argv, frames, heldout) -> int:
    from fsplit_ros.evaluation import detection_fidelity as fidelity
    try:
        rows, info = fidelity.evaluate_detection(frames, args.backbone, [Path(c) for c in args.checkpoints],
                                        qualities=args.qualities or fidelity.IMAGE_QUALITIES,
                                        split_codecs=args.split_codecs or fidelity.SPLIT_CODECS,
                                        heldout_names=[s.path.name for s in heldout])
    except (TrainedOnHeldOut, ValueError, OSError) as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cheapest = {}
    for family in ("split", "image-model", "image-native", "bottleneck"):
        for level in (0.9, 0.95):
            row = fidelity.smallest_bytes_at(rows, family, level)
            cheapest[f"{family} mAP50>={level}"] = row.to_dict() if row else None
    summary = {"command": " ".join(["fsplit-eval", *(sys.argv[1:] if argv is None else argv)]),
               "detector": args.backbone, "heldout_sources": [s.describe() for s in heldout], **info,
               "cheapest": cheapest, "rows": [r.to_dict() for r in rows]}
    _write_table(out / "detection_fidelity", summary, rows)
    fidelity.plot(rows, out / "detection_fidelity.png", f"{args.backbone}: fidelity mAP vs bytes ({info['frames']} held-out "
         f"frames, {info['reference_detections']} reference detections)")
    lines = ["| method | setting | bytes/frame | p95 | mAP@0.5 | mAP@[.5:.95] | onboard ms | edge ms |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.setting} | {r.bytes_mean:.0f} | {r.bytes_p95:.0f} | {100 * r.map50:.1f} | "
              f"{100 * r.map50_95:.1f} | {r.onboard_ms:.1f} | {r.edge_ms:.1f} |" for r in rows]
    (out / "detection_fidelity.md").write_text(
        f"Command: `{summary['command']}`  \n{info['frames']} held-out frames ({', '.join(s.path.name for s in heldout if s.kind == 'video')} + "
        f"photos), {info['reference_detections']} reference detections at score > 0.35 in "
        f"{info['frames_with_detections']} frames, classes: {', '.join(info['reference_classes'])}.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
