"""Grad-CAM saliency at the bottleneck's injection point, for FrankenSplit's saliency-guided
distortion  L_dist = g1 * MSE(h, h~) + g2 * mean_i(s_i * (h_i - h~_i)^2).

The map is computed through the *frozen* backbone: h = head(x) at the injection split, y =
tail(h), and a scalar score of y: the predicted class's logit for a classifier; for a detector the
summed confidence (best class score) of its DETECTION_EVIDENCE_CELLS most confident cells, i.e.
the detector's own evidence for the objects it sees. The channel weights are the spatially
averaged gradients w_k = mean_ij d score / d h_kij, and cam = relu(sum_k w_k h_k).

Normalisation: each map is divided by its own spatial mean, so it averages to 1 over the frame.
The saliency-weighted term then has the same scale as plain MSE (a uniform map makes the two
equal), and g1/g2 only redistribute the distortion budget towards salient positions instead of
changing its size. A map that is zero everywhere (no positive evidence) becomes uniform (all 1).

Maps are computed once per training frame, on the *full* frame resized so that its shorter side is
the model's input size capped at 320 (224 for the ImageNet backbones; crops are cut from the map
later, with the same box as the image, in relative coordinates), and cached on disk keyed by the
frames' content, the backbone's weights hash and the split.
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from fsplit_ros.datasets.frames import Frame, frames_digest
from fsplit_ros.models import LoadedBackbone
from fsplit_ros.splitting import SplittableModel
from fsplit_ros.tasks import TASKS

METHOD = "gradcam-predicted-class/mean-normalised/v2"
DETECTION_METHOD = "gradcam-top-cells-confidence/mean-normalised/v1"
MAX_SALIENCY_SHORT_SIDE = 320     # the frames the trainer caches are at most this (CPU cost)
DETECTION_EVIDENCE_CELLS = 32     # a few objects' worth of cells: NanoDet scores 3-10 cells per object


def normalise_saliency(cam: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(N,h,w) non-negative maps -> each divided by its spatial mean; all-zero maps -> ones."""
    mean = cam.mean(dim=(-2, -1), keepdim=True)
    return torch.where(mean > eps, cam / mean.clamp_min(eps), torch.ones_like(cam))


def predicted_class_score(logits: torch.Tensor) -> torch.Tensor:
    """Classifier output (N, classes) -> (N,) logit of each sample's predicted class."""
    return logits.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)


def detection_evidence(num_classes: int, cells: int = DETECTION_EVIDENCE_CELLS):
    """Score function for a dense detector whose output is (N, cells, num_classes + box terms)
    with class scores first (NanoDet: sigmoid scores): the summed best-class score of the `cells`
    most confident cells of each sample."""
    def score(output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3 or output.shape[-1] < num_classes:
            raise ValueError(f"expected a (N, cells, >= {num_classes}) detector output, got "
                             f"{tuple(output.shape)}")
        confidence = output[..., :num_classes].amax(dim=-1)
        return confidence.topk(min(cells, confidence.shape[1]), dim=1).values.sum(dim=1)
    return score


def grad_cam(head: torch.nn.Module, tail: torch.nn.Module, x: torch.Tensor,
             score_fn=predicted_class_score) -> torch.Tensor:
    """Grad-CAM at the head's output for score_fn(tail output) (N,): (N,3,H,W) -> (N,h,w), mean
    1 each. Default: the predicted class of a classifier.

    Head and tail must be in eval mode (samples then do not interact, so one backward pass of the
    summed scores gives every sample's own gradient)."""
    with torch.no_grad():
        h = head(x)
    h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        score = score_fn(tail(h)).sum()
        (grad,) = torch.autograd.grad(score, h)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * h.detach()).sum(dim=1))
    return normalise_saliency(cam)


def saliency_short_side(backbone: LoadedBackbone) -> int:
    return min(backbone.input_size, MAX_SALIENCY_SHORT_SIDE)


# Per task (fsplit_ros/tasks.py): the method's name (in cache keys) and what Grad-CAM explains.
SALIENCY = {
    "classification": (METHOD, lambda backbone: predicted_class_score),
    "detection": (DETECTION_METHOD, lambda backbone: detection_evidence(backbone.detector.config.num_classes)),
}


if set(SALIENCY) != set(TASKS):
    raise ImportError(f"tasks {sorted(TASKS)} need a saliency entry each")


def saliency_score_fn(backbone: LoadedBackbone):
    """What Grad-CAM explains: the predicted class, or a detector's own detection confidence."""
    return SALIENCY[backbone.task.name][1](backbone)


def saliency_method(backbone: LoadedBackbone) -> str:
    return SALIENCY[backbone.task.name][0]


def saliency_input_size(height: int, width: int, short: int = 224,
                        long_multiple: int = 32) -> tuple[int, int]:
    """(height, width) a frame is resized to for Grad-CAM: shorter side -> `short`, the longer
    side rounded to a multiple of `long_multiple` (an aspect change of a few percent) so that frames
    of many sizes share a few batch shapes; every new input shape costs a fresh kernel selection
    (seconds per still image under cuDNN 9)."""
    scale = short / min(height, width)

    def snap(side):
        return max(short, round(side * scale / long_multiple) * long_multiple)

    return (short, snap(width)) if height <= width else (snap(height), short)


def resize_for_saliency(rgb: np.ndarray, short: int = 224) -> np.ndarray:
    h, w = saliency_input_size(*rgb.shape[:2], short=short)
    interp = cv2.INTER_AREA if h < rgb.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(rgb, (w, h), interpolation=interp)


def compute_saliency(frames: Sequence[Frame], backbone: LoadedBackbone, injection_split: int,
                     batch_size: int = 16, device: str | torch.device = "cpu",
                     progress: bool = False) -> list[torch.Tensor]:
    """One Grad-CAM map per frame (CPU float32, feature resolution of the frame resized to
    saliency_short_side, e.g. 28x36 for a 4:3 frame at 224). Frames of equal resized shape are
    batched together."""
    # A private channels-last copy (much faster depthwise convolutions on CPU; caller's model untouched).
    frozen = copy.deepcopy(backbone.model).eval().requires_grad_(False)
    split = SplittableModel(frozen.to(device, memory_format=torch.channels_last))
    head, tail = split.head(injection_split), split.tail(injection_split)
    mean = torch.tensor(backbone.data_config["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.data_config["std"], device=device).view(1, 3, 1, 1)
    short, score_fn, bgr = saliency_short_side(backbone), saliency_score_fn(backbone), \
        backbone.channel_order == "bgr"
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        groups[saliency_input_size(*f.rgb.shape[:2], short=short)].append(i)
    batches = [idx[k:k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]
    maps: list[torch.Tensor | None] = [None] * len(frames)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(frames), desc="saliency (Grad-CAM)", unit="frame")
    # cuDNN autotuning would re-benchmark every layer for each of the many distinct frame shapes
    # (seconds per still image); the default heuristics are fast enough for one pass.
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                    deterministic=torch.backends.cudnn.deterministic):
        for batch in batches:
            rgb = np.stack([resize_for_saliency(frames[i].rgb, short) for i in batch])
            x = torch.from_numpy(rgb).to(device).permute(0, 3, 1, 2).float().div_(255.0)   # NHWC memory
            if bgr:
                x = x.flip(1)
            cams = grad_cam(head, tail, (x - mean) / std, score_fn).cpu()
            for i, cam in zip(batch, cams):
                maps[i] = cam.contiguous()
            if bar:
                bar.update(len(batch))
    if bar:
        bar.close()
    return maps  # type: ignore[return-value]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fsplit_ros" / "saliency"


def saliency_cache_key(frames: Sequence[Frame], backbone: LoadedBackbone, injection_split: int) -> str:
    h = hashlib.sha256()
    for part in (saliency_method(backbone), str(saliency_short_side(backbone)), backbone.weights_hash,
                 str(injection_split),
                 frames_digest(frames)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:24]


def cached_saliency(frames: Sequence[Frame], backbone: LoadedBackbone, injection_split: int,
                    cache_dir: str | Path | None = None, batch_size: int = 16,
                    device: str | torch.device = "cpu", progress: bool = False
                    ) -> tuple[list[torch.Tensor], Path, bool]:
    """Saliency maps for `frames`, from the cache if this exact corpus/backbone/split was computed
    before. Returns (maps, cache file, whether it was a cache hit)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = saliency_cache_key(frames, backbone, injection_split)
    path = cache_dir / f"{backbone.name}-split{injection_split}-{key}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key and len(blob.get("maps", [])) == len(frames):
                return list(blob["maps"]), path, True
        except Exception:   # a truncated/foreign file is recomputed, never trusted
            pass
    maps = compute_saliency(frames, backbone, injection_split, batch_size, device, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"key": key, "method": saliency_method(backbone), "backbone": backbone.name,
                "weights_hash": backbone.weights_hash, "injection_split": injection_split,
                "maps": maps}, tmp)
    tmp.replace(path)
    return maps, path, False
