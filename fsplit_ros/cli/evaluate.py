"""fsplit-eval: rate vs agreement on the held-out frames for FrankenSplit checkpoints and every
baseline (JPEG/WebP 10..95, PNG, raw split tensors), as CSV, JSON and a plot. For a detector
(`--backbone nanodet`): fidelity mAP vs bytes against the unmodified detector, for raw split
tensors, letterboxed and whole-frame JPEG/WebP, and bottleneck checkpoints.

    fsplit-eval --backbone efficientnet_lite0 --checkpoints runs/train/efficientnet_lite0/*.pt --out DIR
    fsplit-eval --family B --checkpoints CKPT --out DIR       # footage unlike the training data
    fsplit-eval --heldout my_robot.mp4 my_photos/ --checkpoints CKPT --out DIR   # your footage
    fsplit-eval --backbone nanodet --out bench/results/detection_fidelity/nanodet
    fsplit-eval --family A --out DIR --record fsplit_ros/profiling/fidelity/efficientnet_lite0.json

Held-out families (fsplit_ros/datasets/frames.py): A, footage like the training data (the
default), B, footage unlike it (a lab camera; needs the corpus, fsplit-data). --heldout evaluates
your own videos / images / folders instead, and refuses a checkpoint trained on any of them.
Agreements come with Wilson 95 % intervals. --record writes the image and split rows as the
backbone's fidelity record, which the link monitor's `min_fidelity` floor reads
(fsplit_ros/profiling/fidelity.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from fsplit_ros.datasets.frames import (FrameSourceError, heldout_families, load_frames,
                                        sources_from_paths)
from fsplit_ros.evaluation.intervals import format_interval
from fsplit_ros.models.backbones import resolve_spec
from fsplit_ros.tasks import TASKS
from fsplit_ros.evaluation.rate_accuracy import (JPEG_WEBP_QUALITIES, SPLIT_CODECS, TrainedOnHeldOut,
                                                 evaluate, plot, targets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--checkpoints", nargs="*", default=[], help="FrankenSplit checkpoints (rate points)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--family", choices=["A", "B"], default="A",
                    help="held-out family: A = like the training data, B = unlike it (default %(default)s)")
    ap.add_argument("--heldout", nargs="+", metavar="PATH", default=None,
                    help="evaluate on these videos / images / image folders instead of a family")
    ap.add_argument("--max-frames", type=int, default=0,
                    help="cap on the held-out frames besides the labelled photos (0 = all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--qualities", type=int, nargs="+", default=None,
                    help="JPEG/WebP qualities of the image baselines (default: 10..95 for classifiers, "
                         "10 30 50 70 90 95 for detectors)")
    ap.add_argument("--split-codecs", nargs="+", default=None,
                    help="tensor codecs of the raw split-tensor baselines (default: all for classifiers, "
                         "fp16+zlib and uint8-channel+zlib for detectors)")
    ap.add_argument("--record", metavar="PATH", default=None,
                    help="also write the image and split rows as the model's fidelity record (the link "
                         "monitor's min_fidelity reads fsplit_ros/profiling/fidelity/<backbone>.json)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.heldout:
            heldout, family = sources_from_paths(args.heldout, every=1, max_frames=None), "custom"
        else:
            families = heldout_families()
            if args.family not in families:
                raise FrameSourceError(f"held-out family {args.family} needs the corpus: install it "
                                       f"with fsplit-data")
            heldout, family = families[args.family], args.family
    except FrameSourceError as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    try:
        labels = {str(p.resolve()): label for p, label in labelled_imagenet_photos()}
    except FileNotFoundError:
        labels = {}
    unlabelled = [s for s in heldout if s.file_key not in labels]
    frames = [f.rgb for f in load_frames(unlabelled, max_short_side=None)] if unlabelled else []
    if args.max_frames and len(frames) > args.max_frames:
        frames = frames[::max(1, len(frames) // args.max_frames)][:args.max_frames]
    import cv2
    photos = [(cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB), labels[s.file_key])
              for s in heldout if s.file_key in labels]
    try:
        task = resolve_spec(args.backbone).task
    except ValueError as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    return EVALUATIONS[task](args, argv, frames, photos, heldout, family, out)


def _evaluate_classifier(args, argv, frames, photos, heldout, family, out: Path) -> int:
    """Rate vs top-1 agreement (and accuracy on the labelled photos)."""
    try:
        rows, info = evaluate(args.backbone, [Path(c) for c in args.checkpoints], frames, photos,
                              qualities=args.qualities or JPEG_WEBP_QUALITIES,
                              split_codecs=args.split_codecs or SPLIT_CODECS,
                              heldout_names=[s.path.name for s in heldout],
                              heldout_paths=[s.path for s in heldout])
    except (TrainedOnHeldOut, ValueError, OSError) as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    summary = {"command": " ".join(["fsplit-eval", *(sys.argv[1:] if argv is None else argv)]),
               "backbone": args.backbone, "family": family,
               "heldout_sources": [s.describe() for s in heldout],
               **info, "targets": targets(rows), "rows": [r.to_dict() for r in rows]}
    _write_results(args, out / "rate_accuracy", summary, rows)
    plot(rows, out / "rate_accuracy.png", f"{args.backbone}: rate vs top-1 agreement, family {family} "
         f"({info['frames'] + info['photos']} held-out frames)")
    lines = _markdown_table(
        ["method", "setting", "bytes/frame", "p95", "agreement % [95 % CI]", "accuracy %", "onboard ms"],
        [[r.method, r.setting, f"{r.bytes_mean:.0f}", f"{r.bytes_p95:.0f}",
          format_interval(r.agreement, r.agreement_lo, r.agreement_hi), f"{100 * r.accuracy:.0f}",
          f"{r.onboard_ms:.2f}"] for r in rows])
    (out / "rate_accuracy.md").write_text(
        f"Command: `{summary['command']}`  \nFamily {family}: {info['frames']} frames + {info['photos']} "
        f"labelled photos from {len(heldout)} files.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(summary["targets"], indent=1))
    return 0


def _markdown_table(header: list[str], cells: list[list[str]]) -> list[str]:
    """Markdown lines: the header, a rule (numbers right-aligned from the third column), the rows."""
    rule = ["---", "---"] + ["---:"] * (len(header) - 2)
    return ["| " + " | ".join(row) + " |" for row in [header, rule, *cells]]


def _write_results(args, stem: Path, summary: dict, rows) -> None:
    """STEM.json and STEM.csv, and with --record the fidelity record."""
    _write_table(stem, summary, rows)
    if args.record:
        from fsplit_ros.profiling.fidelity import record_from_results, save_record
        from fsplit_ros.runtime import Deployment
        weights = Deployment.load(args.backbone, bottleneck=None).backbone.weights_hash
        save_record(record_from_results(summary, weights), args.record)
        print(f"fidelity record: {args.record}")


def _write_table(stem: Path, summary: dict, rows) -> None:
    """summary -> STEM.json, rows -> STEM.csv (one column per field)."""
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].to_dict()))
        writer.writeheader()
        writer.writerows(r.to_dict() for r in rows)


def _evaluate_detector(args, argv, frames, photos, heldout, family, out: Path) -> int:
    """Fidelity mAP vs bytes over every held-out frame, the labelled photos included."""
    from fsplit_ros.evaluation import detection_fidelity as fidelity
    frames = frames + [rgb for rgb, _ in photos]
    try:
        rows, info = fidelity.evaluate_detection(frames, args.backbone, [Path(c) for c in args.checkpoints],
                                        qualities=args.qualities or fidelity.IMAGE_QUALITIES,
                                        split_codecs=args.split_codecs or fidelity.SPLIT_CODECS,
                                        heldout_names=[s.path.name for s in heldout],
                                        heldout_paths=[s.path for s in heldout])
    except (TrainedOnHeldOut, ValueError, OSError) as exc:
        print(f"fsplit-eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cheapest = {}
    for method in ("split", "image-model", "image-native", "bottleneck"):
        for level in (0.9, 0.95):
            row = fidelity.smallest_bytes_at(rows, method, level)
            cheapest[f"{method} mAP50>={level}"] = row.to_dict() if row else None
    summary = {"command": " ".join(["fsplit-eval", *(sys.argv[1:] if argv is None else argv)]),
               "detector": args.backbone, "family": family,
               "heldout_sources": [s.describe() for s in heldout], **info,
               "cheapest": cheapest, "rows": [r.to_dict() for r in rows]}
    _write_results(args, out / "detection_fidelity", summary, rows)
    fidelity.plot(rows, out / "detection_fidelity.png", f"{args.backbone}: fidelity mAP vs bytes ({info['frames']} held-out "
         f"frames, {info['reference_detections']} reference detections)")
    lines = _markdown_table(
        ["method", "setting", "bytes/frame", "p95", "mAP@0.5 [95 % CI]", "mAP@[.5:.95]", "onboard ms", "edge ms"],
        [[r.method, r.setting, f"{r.bytes_mean:.0f}", f"{r.bytes_p95:.0f}", format_interval(r.map50, r.map50_lo, r.map50_hi),
          f"{100 * r.map50_95:.1f}", f"{r.onboard_ms:.1f}", f"{r.edge_ms:.1f}"] for r in rows])
    (out / "detection_fidelity.md").write_text(
        f"Command: `{summary['command']}`  \nFamily {family}: {info['frames']} held-out frames from "
        f"{len(heldout)} files ({', '.join(s.path.name for s in heldout if s.kind == 'video')} + "
        f"images), {info['reference_detections']} reference detections at score > 0.35 in "
        f"{info['frames_with_detections']} frames, classes: {', '.join(info['reference_classes'])}.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


# How fsplit-eval scores each task (fsplit_ros/tasks.py): a detector has no labels for the photos
# either, so every held-out frame is scored by fidelity mAP against the unmodified detector.
EVALUATIONS = {"classification": _evaluate_classifier, "detection": _evaluate_detector}
if set(EVALUATIONS) != set(TASKS):
    raise ImportError(f"tasks {sorted(TASKS)} need an fsplit-eval scoring each")


if __name__ == "__main__":
    sys.exit(main())

