"""Rate vs accuracy on held-out frames, every mode through the real payload path.

For every configuration (FrankenSplit checkpoints, JPEG/WebP at qualities 10..95 and PNG of the
model-input crop, the raw split tensor at each compressive bottleneck with fp16/8-bit codecs) the
frames are encoded by OnboardEncoder, decoded by EdgeDecoder and finished by the tail, exactly as
on the robot and the edge. Reported per configuration: payload bytes per frame (mean, p95, the
whole self-describing payload), top-1 agreement with the unmodified model on the held-out frames,
top-1 accuracy on the labelled ImageNet photos, onboard encode milliseconds (median)."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fsplit_ros.datasets.frames import described_name, file_digest
from fsplit_ros.evaluation.intervals import wilson_interval
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder

JPEG_WEBP_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
SPLIT_CODECS = ("fp16+zlib", "uint8-channel", "uint8-channel+zlib")


class TrainedOnHeldOut(ValueError):
    """A checkpoint's training sources include a file of the evaluation's held-out set."""


def check_not_trained_on(checkpoint: Path, metadata: dict, heldout_names, heldout_paths=()) -> None:
    """Refuse to evaluate a checkpoint on frames it was trained on: by source file name, as the
    trainer records them ('vtest.avi (every 1, max 800)', 'imagenet_00_243.jpg'), and, where the
    checkpoint records its files' digests (`train_file_digests`) and `heldout_paths` are given, by
    content: a same-named other file passes, the same file under another name does not."""
    trained = {described_name(s) for s in metadata.get("train_sources", [])}
    digests = {name: set(d) for name, d in metadata.get("train_file_digests", {}).items()}
    pairs = list(zip(heldout_names, heldout_paths)) if heldout_paths else [(n, None) for n in heldout_names]
    every_digest = set().union(*digests.values()) if digests else set()
    leaked = set()
    for name, path in pairs:
        if name in trained:
            if path is None or name not in digests or file_digest(path) in digests[name]:
                leaked.add(name)
        elif path is not None and every_digest and file_digest(path) in every_digest:
            leaked.add(name)
    if leaked:
        raise TrainedOnHeldOut(f"{checkpoint} was trained on {sorted(leaked)}, which this evaluation holds out: "
                               f"retrain without them or evaluate on other files")


@dataclass
class Row:
    method: str          # bottleneck | jpeg | webp | png | split
    setting: str         # beta / quality / split point + codec
    saliency: bool | None
    bytes_mean: float
    bytes_p95: float
    agreement: float     # top-1 agreement with the unmodified model (all held-out frames incl. photos)
    accuracy: float      # top-1 accuracy on the labelled photos
    onboard_ms: float
    agreement_lo: float = float("nan")   # Wilson 95 % interval of the agreement
    agreement_hi: float = float("nan")
    frames: int = 0                      # frames the agreement is measured on

    def to_dict(self) -> dict:
        return asdict(self)


def _top1(dec: EdgeDecoder, payloads: list[bytes], batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(payloads), batch):
        frames = [dec.decode(p) for p in payloads[i:i + batch]]
        out += [int(o.argmax()) for o in dec.run_tails(frames)]
    return np.array(out)


def evaluate_configuration(enc: OnboardEncoder, dec: EdgeDecoder, prepared, reference: np.ndarray,
                           labelled, labels: np.ndarray, mode: str, split: int | None = None) -> dict:
    payloads, times = [], []
    for frame in prepared + labelled:
        t0 = time.perf_counter()
        payloads.append(enc.encode(frame, mode, split))
        times.append((time.perf_counter() - t0) * 1e3)
    top1 = _top1(dec, payloads)
    sizes = np.array([len(p) for p in payloads])
    agree = int((top1 == reference).sum())
    lo, hi = wilson_interval(agree, len(reference))
    return {"bytes_mean": float(sizes.mean()), "bytes_p95": float(np.percentile(sizes, 95)),
            "agreement": agree / len(reference), "agreement_lo": lo, "agreement_hi": hi,
            "frames": len(reference),
            "accuracy": float((top1[len(prepared):] == labels).mean()) if len(labels) else float("nan"),
            "onboard_ms": statistics.median(times)}


@torch.no_grad()
def checkpoint_label(path, paths) -> str:
    """A checkpoint's file name in result tables, with its folder where names repeat (every run
    of a sweep writes <backbone>_bottleneck_beta<beta>.pt)."""
    path = Path(path)
    names = [Path(p).name for p in paths]
    return f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name


def checkpoint_setting(meta: dict) -> str:
    """beta, and the principal-component start's quantization step where the run had one."""
    step = meta.get("pca_init_step")
    return f"beta={meta.get('beta')}" + (f" pca step {step:g}" if isinstance(step, (int, float)) else "")


def evaluate(backbone: str, checkpoints: list[Path], frames: list[np.ndarray], photos: list[tuple[np.ndarray, int]],
             qualities=JPEG_WEBP_QUALITIES, split_codecs=SPLIT_CODECS,
             heldout_names=(), heldout_paths=()) -> tuple[list[Row], dict]:
    """Every configuration on the same frames; `heldout_names` (file names) must not appear in any
    checkpoint's training sources."""
    dep = Deployment.load(backbone, bottleneck=None)
    bottlenecks = {}
    for path in checkpoints:   # load and vet every checkpoint before the long run starts
        bdep = Deployment.load(backbone, bottleneck=path)
        check_not_trained_on(path, bdep.bottleneck_metadata or {}, heldout_names, heldout_paths)
        bottlenecks[str(path)] = bdep
    base = OnboardEncoder(dep)
    prepared = [base.prepare(f) for f in frames]
    labelled = [base.prepare(rgb) for rgb, _ in photos]
    labels = np.array([label for _, label in photos])
    # Agreement is measured on every held-out frame: the videos' frames and the labelled photos.
    reference = np.array([int(base.predict_local(p).argmax()) for p in prepared + labelled])
    local_acc = float(np.mean([int(base.predict_local(p).argmax()) == y for p, y in zip(labelled, labels)]))
    rows: list[Row] = []
    jobs = []
    for path in checkpoints:
        jobs.append(("bottleneck", str(path), path))
    for q in qualities:
        jobs += [("jpeg", f"q{q}", q), ("webp", f"q{q}", q)]
    jobs.append(("png", "level 6", 6))
    for index in dep.compressive_split_indices():
        for codec in split_codecs:
            jobs.append(("split", f"{index} {dep.split_point(index).name} {codec}", (index, codec)))
    for method, setting, arg in tqdm(jobs, desc="configurations", unit="cfg"):
        saliency = None
        if method == "bottleneck":
            bdep = bottlenecks[str(arg)]
            meta = bdep.bottleneck_metadata or {}
            saliency = bool(meta.get("saliency", (meta.get("gammas") or [1, 0])[1] > 0))
            setting = f"{checkpoint_setting(meta)} ({checkpoint_label(arg, checkpoints)})"
            enc, dec, mode, split = OnboardEncoder(bdep), EdgeDecoder(bdep), "bottleneck", None
            res = evaluate_configuration(enc, dec, [enc.prepare(f) for f in frames], reference,
                                         [enc.prepare(rgb) for rgb, _ in photos], labels, mode)
        elif method in ("jpeg", "webp", "png"):
            enc = OnboardEncoder(dep, image_codec=method, image_quality=arg)
            res = evaluate_configuration(enc, EdgeDecoder(dep), prepared, reference, labelled, labels, "image")
        else:
            index, codec = arg
            enc = OnboardEncoder(dep, tensor_codec=codec)
            res = evaluate_configuration(enc, EdgeDecoder(dep), prepared, reference, labelled, labels, "split", index)
        rows.append(Row(method, setting, saliency, **res))
    return rows, {"local_accuracy": local_acc, "frames": len(frames), "photos": len(photos)}


def bytes_at_agreement(rows: list[Row], target: float) -> float | None:
    """Smallest payload of any row in `rows` that reaches `target` agreement (None if none does)."""
    ok = [r.bytes_mean for r in rows if r.agreement >= target]
    return min(ok) if ok else None


def interpolated_bytes(rows: list[Row], target: float) -> float | None:
    """Bytes needed for `target` agreement on a method's rate curve (log-linear interpolation
    between its rate points); None outside the curve."""
    pts = sorted((r.bytes_mean, r.agreement) for r in rows)
    for (b0, a0), (b1, a1) in zip(pts, pts[1:]):
        if min(a0, a1) <= target <= max(a0, a1) and a0 != a1:
            f = (target - a0) / (a1 - a0)
            return float(np.exp(np.log(b0) + f * (np.log(b1) - np.log(b0))))
    hits = [b for b, a in pts if a >= target]
    return min(hits) if hits else None


def targets(rows: list[Row], tolerance: float = 0.01) -> dict:
    """The issue's targets at <= `tolerance` agreement lost against the unmodified model."""
    target = 1.0 - tolerance
    by = {m: [r for r in rows if r.method == m] for m in ("bottleneck", "jpeg", "webp", "png", "split")}
    bn = bytes_at_agreement(by["bottleneck"], target)
    jpeg95 = next((r.bytes_mean for r in by["jpeg"] if r.setting == "q95"), None)
    best_image = bytes_at_agreement(by["jpeg"] + by["webp"], target)
    raw_split = min((r.bytes_mean for r in by["split"] if "uint8-channel" == r.setting.split()[-1]
                     and r.agreement >= target), default=None)
    sal = [r for r in by["bottleneck"] if r.saliency]
    plain = [r for r in by["bottleneck"] if r.saliency is False]
    out = {"agreement_target": target, "bottleneck_bytes": bn, "jpeg_q95_bytes": jpeg95,
           "smallest_jpeg_webp_bytes": best_image, "raw_split_uint8_bytes": raw_split}
    if bn:
        out.update({"vs_jpeg_q95": jpeg95 / bn if jpeg95 else None,
                    "vs_smallest_jpeg_webp": best_image / bn if best_image else None,
                    "vs_raw_split": raw_split / bn if raw_split else None})
    if sal and plain:
        levels = sorted({round(r.agreement, 3) for r in sal + plain})
        matched = []
        for level in levels:
            a, b = interpolated_bytes(sal, level), interpolated_bytes(plain, level)
            if a and b:
                matched.append({"agreement": level, "saliency_bytes": a, "plain_bytes": b,
                                "saliency_saving": 1 - a / b})
        out["saliency_vs_plain"] = matched
    return out


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 6))
    groups = {}
    for r in rows:
        key = r.method if r.method != "bottleneck" else ("FrankenSplit (saliency)" if r.saliency else
                                                         "FrankenSplit (plain MSE)")
        if r.method == "split":
            key = f"split {r.setting.split()[-1]}"
        groups.setdefault(key, []).append(r)
    for key, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.bytes_mean)
        ax.plot([r.bytes_mean for r in rs], [100 * r.agreement for r in rs], "o-", ms=4, label=key)
    ax.set_xscale("log")
    ax.set_xlabel("payload bytes per frame (log)")
    ax.set_ylabel("top-1 agreement with the unmodified model (%)")
    ax.axhline(99, color="grey", lw=0.8, ls="--")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
