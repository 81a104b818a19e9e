"""Edge side: validate and decode payloads, run the backbone tail, batch frames that share a
split point. Every rejection is a typed PayloadError; nothing large is allocated before checks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fsplit_ros.codecs import EntropyCodec, ImageCodec, TensorCodec
from fsplit_ros.imaging import MAX_ASPECT_RATIO
from fsplit_ros.payload import (Limits, OversizedPayload, PayloadHeader, RefusedMode, ShapeMismatch,
                                unpack_payload)
from fsplit_ros.runtime.deployment import Deployment


@dataclass
class DecodedFrame:
    header: PayloadHeader
    features: torch.Tensor     # input of the tail
    tail_from: int             # split index the tail starts at


class EdgeDecoder:
    def __init__(self, deployment: Deployment, limits: Limits = Limits(), refused_modes=frozenset()):
        """refused_modes: modes rejected (RefusedMode) right after the header checks, before their
        body is decoded; e.g. {"image"} where no pixels may be processed. May be changed later."""
        self.dep = deployment
        self.limits = limits
        self.refused_modes = frozenset(refused_modes)
        self.hashes = deployment.model_hashes()
        self.entropy_codec = EntropyCodec(deployment.bottleneck) if deployment.bottleneck else None
        self._tails: dict[int, torch.nn.Module] = {}

    def tail(self, index: int) -> torch.nn.Module:
        if index not in self._tails:
            self._tails[index] = self.dep.splittable.tail(index)
        return self._tails[index]

    def decode(self, payload: bytes) -> DecodedFrame:
        header, body = unpack_payload(payload, self.hashes, self.limits)
        if header.mode in self.refused_modes:
            raise RefusedMode(f"{header.mode} payloads are refused by this edge"
                              + (" (allow_image_mode=false)" if header.mode == "image" else ""))
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
        if max(native[:2]) > MAX_ASPECT_RATIO * min(native[:2]) and tuple(header.shape) == native:
            # the centre crop would upscale the short side: a 2x8192 frame costs 1.6 GB
            raise OversizedPayload(f"camera frame {native[1]}x{native[0]} has an aspect ratio beyond "
                                   f"{MAX_ASPECT_RATIO}:1")
        rgb = ImageCodec(header.codec).decode(body, header)   # decoding needs no quality
        if tuple(header.shape) != (size, size, 3):   # a whole camera frame: prepare it as the robot would
            rgb = self.dep.model_pixels(rgb)
        return DecodedFrame(header, self.dep.pixels_to_tensor(rgb), 0)

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
