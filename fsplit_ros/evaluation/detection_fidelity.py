"""Detection fidelity vs bytes on held-out frames, every mode through the real payload path.

There are no box labels for the offline frames, so the reference is the unmodified detector itself
("fidelity mAP"): its detections at the deployment threshold (0.35) are the ground truth, and each
configuration's detections at COCO's evaluation threshold (0.05, the score ranks them) are scored
against them with pycocotools' COCOeval: mAP@0.5 and mAP@[.5:.95]. The unmodified detector scores
1.0 by construction (a check of the machinery); everything lossy scores below.

Configurations: raw split tensors at each compressive split point (fp16/8-bit codecs), the
letterboxed model input as JPEG/WebP (image mode "model"), the whole camera frame as JPEG/WebP
(what image_transport's compressed offload sends), and FrankenSplit checkpoints when given. Per
configuration: payload bytes per frame (mean, p95), the two mAPs, onboard ms (prepare + encode,
median) and edge ms (decode + tail + postprocess, median)."""
from __future__ import annotations

import contextlib
import io
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fsplit_ros.evaluation.rate_accuracy import checkpoint_label, checkpoint_setting, check_not_trained_on
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder

REFERENCE_THRESHOLD = 0.35     # what the nodes publish: the detections that count as ground truth
EVALUATION_THRESHOLD = 0.05    # COCO evaluation keeps low-score detections for the ranking
IMAGE_QUALITIES = (10, 30, 50, 70, 90, 95)
SPLIT_CODECS = ("fp16+zlib", "uint8-channel+zlib")


@dataclass
class DetectionRow:
    method: str          # reference | split | image-model (letterbox) | image-native (whole frame) | bottleneck
    setting: str
    bytes_mean: float
    bytes_p95: float
    map50: float         # fidelity mAP@0.5 against the unmodified detector
    map50_95: float      # fidelity mAP@[.5:.95]
    onboard_ms: float
    edge_ms: float
    map50_lo: float = float("nan")   # 95 % frame-bootstrap interval of map50
    map50_hi: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def fidelity_map(reference: list[list], predicted: list[list], num_classes: int = 80) -> tuple[float, float]:
    """(mAP@0.5, mAP@[.5:.95]) of `predicted` against `reference` as ground truth, per frame lists
    of fsplit_ros.detection.Detection. NaN when the reference has no detection at all."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (truth, pred) in enumerate(zip(reference, predicted, strict=True), start=1):
        images.append({"id": image_id})
        for d in truth:
            x1, y1, x2, y2 = d.box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": d.class_id + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for d in pred:
            x1, y1, x2, y2 = d.box
            results.append({"image_id": image_id, "category_id": d.class_id + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score})
    if not annotations:
        return float("nan"), float("nan")
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):   # COCOeval prints its progress
        truth = COCO()
        truth.dataset = {"info": {}, "images": images, "annotations": annotations,
                         "categories": [{"id": c + 1} for c in range(num_classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    map50_95, map50 = evaluation.stats[0], evaluation.stats[1]
    return max(float(map50), 0.0), max(float(map50_95), 0.0)   # -1 = no matching class at all


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N x 4, x1 y1 x2 y2) with every box in b, as COCOeval computes it."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])   # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def frame_matches(truth: list, pred: list, iou_threshold: float = 0.5, max_dets: int = 100):
    """One frame's scored detections matched to its reference, per class as COCOeval does it (best
    IoU among unmatched references, in score order, at most `max_dets` per class): returns
    (class ids, scores, true-positive flags) and the reference count per class. Frames are
    independent here, which is what lets the mAP be bootstrapped over frames cheaply."""
    classes, scores, tps, counts = [], [], [], {}
    for c in {d.class_id for d in truth} | {d.class_id for d in pred}:
        gts = np.array([d.box for d in truth if d.class_id == c], dtype=np.float64).reshape(-1, 4)
        dets = sorted((d for d in pred if d.class_id == c), key=lambda d: -d.score)[:max_dets]
        counts[c] = len(gts)
        if not dets:
            continue
        ious = _box_iou(np.array([d.box for d in dets], dtype=np.float64), gts) if len(gts) else None
        matched = np.zeros(len(gts), bool)
        for i, d in enumerate(dets):
            best, m = min(iou_threshold, 1 - 1e-10), -1
            for g in range(len(gts)):
                if matched[g] or ious[i, g] < best:
                    continue
                best, m = ious[i, g], g
            if m >= 0:
                matched[m] = True
            classes.append(c)
            scores.append(d.score)
            tps.append(m >= 0)
    return (np.array(classes, dtype=np.int64), np.array(scores, dtype=np.float64), np.array(tps, bool)), counts


def map_from_matches(matches: list, frames=None) -> float:
    """COCO's 101-point interpolated AP at one IoU threshold, averaged over the classes that have
    reference detections, from per-frame `frame_matches` (of the frames in `frames`, repeats
    allowed: a bootstrap sample). NaN without reference detections."""
    frames = range(len(matches)) if frames is None else frames
    parts = [matches[f][0] for f in frames]
    classes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    tps = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, bool)
    totals: dict[int, int] = {}
    for f in frames:
        for c, n in matches[f][1].items():
            totals[c] = totals.get(c, 0) + n
    thresholds = np.linspace(0.0, 1.0, 101)
    aps = []
    for c, n in totals.items():
        if n == 0:
            continue
        mine = classes == c
        order = np.argsort(-scores[mine], kind="mergesort")
        tp = np.cumsum(tps[mine][order])
        fp = np.cumsum(~tps[mine][order])
        recall = tp / n
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        idx = np.searchsorted(recall, thresholds, side="left")
        aps.append(float(np.mean([precision[i] if i < precision.size else 0.0 for i in idx])))
    return float(np.mean(aps)) if aps else float("nan")


def map50_interval(reference: list[list], predicted: list[list], reps: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """(low, high): see map50_with_interval."""
    return map50_with_interval(reference, predicted, reps, seed, level)[1:]


def map50_with_interval(reference: list[list], predicted: list[list], reps: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Bootstrap interval of the fidelity mAP@0.5 over frames (frames resampled with replacement
    `reps` times), the basic (reverse-percentile) kind: [2m - q_hi, 2m - q_lo] around the estimate m.
    The plain percentile interval sat above the estimate (e.g. 75.8 in [73.3, 83.0]) because a
    resample that misses a rare class drops that class's, usually low, AP from the mean; the basic
    interval corrects that bias. Frames of one video are not independent, so, like the Wilson
    intervals of agreements, it is if anything too narrow. Returns (estimate, low, high), each
    matching done once."""
    matches = [frame_matches(t, p) for t, p in zip(reference, predicted, strict=True)]
    estimate = map_from_matches(matches)
    rng = np.random.default_rng(seed)
    samples = [map_from_matches(matches, rng.integers(0, len(matches), len(matches))) for _ in range(reps)]
    samples = [s for s in samples if not np.isnan(s)]
    if not samples:
        return estimate, float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    q_lo, q_hi = np.percentile(samples, tail), np.percentile(samples, 100 - tail)
    return estimate, float(np.clip(2 * estimate - q_hi, 0, 1)), float(np.clip(2 * estimate - q_lo, 0, 1))


def _detections(dep: Deployment, outputs, frames, threshold: float) -> list[list]:
    return [dep.results(output, frame.width, frame.height, score_threshold=threshold)
            for output, frame in zip(outputs, frames)]


def evaluate_configuration(dep: Deployment, enc: OnboardEncoder, dec: EdgeDecoder, rgb_frames, reference,
                           mode: str, split: int | None = None) -> dict:
    payloads, onboard, edge, predicted = [], [], [], []
    for rgb in rgb_frames:
        t0 = time.perf_counter()
        frame = enc.prepare(rgb)
        payloads.append(enc.encode(frame, mode, split))
        t1 = time.perf_counter()
        decoded = dec.decode(payloads[-1])
        output = dec.run_tails([decoded])[0]
        predicted += _detections(dep, [output], [frame], EVALUATION_THRESHOLD)
        edge.append((time.perf_counter() - t1) * 1e3)
        onboard.append((t1 - t0) * 1e3)
    sizes = np.array([len(p) for p in payloads])
    map50, map50_95 = fidelity_map(reference, predicted)
    lo, hi = map50_interval(reference, predicted)
    return {"bytes_mean": float(sizes.mean()), "bytes_p95": float(np.percentile(sizes, 95)),
            "map50": map50, "map50_95": map50_95, "map50_lo": lo, "map50_hi": hi,
            "onboard_ms": statistics.median(onboard), "edge_ms": statistics.median(edge)}


@torch.no_grad()
def evaluate_detection(frames: list[np.ndarray], detector: str = "nanodet", checkpoints=(),
                       qualities=IMAGE_QUALITIES, split_codecs=SPLIT_CODECS, heldout_names=(),
                       heldout_paths=()
                       ) -> tuple[list[DetectionRow], dict]:
    """Every configuration on the same held-out RGB frames; checkpoints trained on any of
    `heldout_names` are refused."""
    dep = Deployment.load(detector, bottleneck=None)
    bottlenecks = {}
    for path in checkpoints:
        bdep = Deployment.load(detector, bottleneck=path)
        check_not_trained_on(Path(path), bdep.bottleneck_metadata or {}, heldout_names, heldout_paths)
        bottlenecks[str(path)] = bdep
    base = OnboardEncoder(dep)
    prepared = [base.prepare(f) for f in frames]
    local_outputs = [base.predict_local(p) for p in prepared]
    reference = _detections(dep, local_outputs, prepared, REFERENCE_THRESHOLD)
    # The reference configuration goes through the same scoring: 1.0 by construction.
    scored = _detections(dep, local_outputs, prepared, EVALUATION_THRESHOLD)
    ref50, ref50_95 = fidelity_map(reference, scored)
    rows = [DetectionRow("reference", "unmodified detector (local)", 0.0, 0.0, ref50, ref50_95, float("nan"),
                         float("nan"), *map50_interval(reference, scored))]
    jobs = [("bottleneck", str(p)) for p in checkpoints]
    jobs += [("split", (index, codec)) for index in dep.compressive_split_indices() for codec in split_codecs]
    jobs += [(f"image-{res}", (codec, q)) for res in ("model", "native") for codec in ("jpeg", "webp")
             for q in qualities]
    for method, arg in tqdm(jobs, desc="configurations", unit="cfg"):
        if method == "bottleneck":
            bdep = bottlenecks[arg]
            latent = "x".join(map(str, bdep.bottleneck.config.latent_shape))
            meta = bdep.bottleneck_metadata or {}
            guidance = {True: ", saliency", False: ", plain MSE"}.get(meta.get("saliency"), "")
            setting = f"{checkpoint_setting(meta)} latent {latent}{guidance} ({checkpoint_label(arg, checkpoints)})"
            res = evaluate_configuration(bdep, OnboardEncoder(bdep), EdgeDecoder(bdep), frames, reference,
                                         "bottleneck")
        elif method == "split":
            index, codec = arg
            setting = f"{index} {dep.split_point(index).name} {codec}"
            res = evaluate_configuration(dep, OnboardEncoder(dep, tensor_codec=codec), EdgeDecoder(dep), frames,
                                         reference, "split", index)
        else:
            codec, quality = arg
            setting = f"{codec} q{quality}"
            enc = OnboardEncoder(dep, image_codec=codec, image_quality=quality,
                                 image_resolution=method.split("-", 1)[1])
            res = evaluate_configuration(dep, enc, EdgeDecoder(dep), frames, reference, "image")
        rows.append(DetectionRow(method, setting, **res))
    info = {"frames": len(frames), "reference_detections": sum(len(r) for r in reference),
            "frames_with_detections": sum(1 for r in reference if r),
            "reference_classes": sorted({d.class_name for r in reference for d in r})}
    return rows, info


def smallest_bytes_at(rows: list[DetectionRow], method_prefix: str, min_map50: float) -> DetectionRow | None:
    """The cheapest row of a method family that keeps at least `min_map50` fidelity mAP@0.5."""
    ok = [r for r in rows if r.method.startswith(method_prefix) and r.map50 >= min_map50]
    return min(ok, key=lambda r: r.bytes_mean, default=None)


def plot(rows: list[DetectionRow], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    groups: dict[str, list[DetectionRow]] = {}
    for r in rows:
        if r.method == "reference":
            continue
        key = r.method if r.method in ("bottleneck",) else (
            f"split {r.setting.split()[-1]}" if r.method == "split" else f"{r.method} {r.setting.split()[0]}")
        groups.setdefault(key, []).append(r)
    for ax, metric, label in ((axes[0], "map50", "fidelity mAP@0.5"), (axes[1], "map50_95", "fidelity mAP@[.5:.95]")):
        for key, rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: r.bytes_mean)
            ax.plot([r.bytes_mean for r in rs], [100 * getattr(r, metric) for r in rs],
                    "o-" if len(rs) > 1 else "s", ms=4, label=key)
        ax.set_xscale("log")
        ax.set_xlabel("payload bytes per frame (log)")
        ax.set_ylabel(f"{label} vs the unmodified detector (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
