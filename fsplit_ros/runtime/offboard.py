"""Edge side: validate and decode payloads, run the backbone tail, batch frames that share a
split point. Every rejection is a typed PayloadError; nothing large is allocated before checks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fsplit_ros.codecs import EntropyCodec, ImageCodec, TensorCodec
from fsplit_ros.models.preprocess import normalize, resize_center_crop
from fsplit_ros.payload import Limits, PayloadHeader, ShapeMismatch, unpack_payload
from fsplit_ros.runtime.deployment import Deployment


@dataclass
class DecodedFrame:
    header: PayloadHeader
    features: torch.Tensor     # input of the tail
    tail_from: int             # split index the tail starts at


class EdgeDecoder:
    def __init__(self, deployment: Deployment, limits: Limits = Limits()):
        self.dep = deployment
        self.limits = limits
        self.hashes = deployment.model_hashes()
        self.entropy_codec = EntropyCodec(deployment.bottleneck) if deployment.bottleneck else None
        self._tails: dict[int, torch.nn.Module] = {}
        cfg = deployment.backbone.data_config
        self._mean, self._std = cfg["mean"], cfg["std"]
        self._crop_pct = cfg.get("crop_pct", 0.875)

    def tail(self, index: int) -> torch.nn.Module:
        if index not in self._tails:
            self._tails[index] = self.dep.splittable.tail(index)
        return self._tails[index]

    def decode(self, payload: bytes) -> DecodedFrame:
        header, body = unpack_payload(payload, self.hashes, self.limits)
        if header.mode == "split":
            point = self.dep.split_point(header.split_index) if 0 < header.split_index < \
                self.dep.splittable.num_units else None
            if point is None or tuple(header.shape) != point.shape:
                raise ShapeMismatch(f"split payload declares index {header.split_index} shape "
                                    f"{header.shape}, which is no split point of {self.dep.name}")
            features = TensorCodec(header.codec).decode(body, header)
            return DecodedFrame(header, features, header.split_index)
        if header.mode == "bottleneck":
            if header.split_index != self.dep.bottleneck.config.injection_split:
                raise ShapeMismatch(f"bottleneck payload for injection point {header.split_index}, "
                                    f"this bottleneck injects at {self.dep.bottleneck.config.injection_split}")
            return DecodedFrame(header, self.entropy_codec.decode(body, header), header.split_index)
        size = self.dep.input_size
        native = (header.image_height, header.image_width, 3)
        if tuple(header.shape) not in ((size, size, 3), native):
            raise ShapeMismatch(f"image payload is {header.shape}: neither the model input {size}x{size}x3 "
                                f"nor the camera frame {native}")
        rgb = ImageCodec(header.codec).decode(body, header)   # decoding needs no quality
        if tuple(header.shape) != (size, size, 3):   # a whole camera frame: crop as the robot would
            rgb = resize_center_crop(rgb, size, self._crop_pct)
        return DecodedFrame(header, normalize(rgb, self._mean, self._std), 0)

    @torch.no_grad()
    def run_tails(self, frames: list[DecodedFrame]) -> list[torch.Tensor]:
        """Model outputs for decoded frames, one batched tail call per distinct split point."""
        outputs: list[torch.Tensor | None] = [None] * len(frames)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.tail_from, []).append(i)
        for start, idx in groups.items():
            batch = torch.cat([frames[i].features for i in idx], dim=0)
            out = self.tail(start)(batch)
            for j, i in enumerate(idx):
                outputs[i] = out[j:j + 1]
        return outputs
