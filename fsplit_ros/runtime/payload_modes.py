"""How each offloading mode of the registry (fsplit_ros/modes.py) encodes a frame on the robot,
decodes it on the edge and names the model hash its payloads carry: one class per mode, so a new
mode is a registry entry plus one class here, and no other module branches on mode names."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fsplit_ros.codecs import ImageCodec, TensorCodec
from fsplit_ros.imaging import MAX_ASPECT_RATIO
from fsplit_ros.modes import OFFLOAD_MODES
from fsplit_ros.payload import OversizedPayload, PayloadHeader, ShapeMismatch

if TYPE_CHECKING:   # the classes below are called by these, never the other way round
    from fsplit_ros.runtime.deployment import Deployment
    from fsplit_ros.runtime.offboard import EdgeDecoder
    from fsplit_ros.runtime.onboard import OnboardEncoder, PreparedFrame


@dataclass
class DecodedFrame:
    header: PayloadHeader
    features: torch.Tensor     # input of the tail
    tail_from: int             # split index the tail starts at
    latent: torch.Tensor | None = None   # bottleneck payloads: the rounded latent further models read


class SplitPayloads:
    """A natural-bottleneck tensor of the unchanged model (Dynamic Split Computing): one candidate
    per compressive split point (modes.Mode.per_split_point)."""

    def split_index(self, dep: "Deployment") -> int | None:
        return None

    def checkpoint_fidelity(self, dep: "Deployment") -> tuple[float | None, str]:
        return None, ""

    def encode(self, enc: "OnboardEncoder", frame: "PreparedFrame", split_index: int | None):
        index = split_index or enc.split_index
        return enc.tensor_codec, enc.tensor_codec.encode(enc.head(index)(frame.tensor)), index

    def decode(self, dec: "EdgeDecoder", header: PayloadHeader, body: memoryview) -> DecodedFrame:
        dep = dec.dep
        point = dep.split_point(header.split_index) if 0 < header.split_index < dep.splittable.num_units else None
        if point is None or tuple(header.shape) != point.shape:
            raise ShapeMismatch(f"split payload declares index {header.split_index} shape "
                                f"{header.shape}, which is no split point of {dep.name}")
        return DecodedFrame(header, TensorCodec(header.codec).decode(body, header), header.split_index)

    def model_hash(self, dep: "Deployment") -> str | None:
        return dep.backbone.weights_hash


class BottleneckPayloads:
    """FrankenSplit's entropy-coded latent: needs the same bottleneck checkpoint on both ends."""

    def split_index(self, dep: "Deployment") -> int | None:
        """The injection point its decoder reconstructs."""
        return dep.bottleneck.config.injection_split

    def checkpoint_fidelity(self, dep: "Deployment") -> tuple[float | None, str]:
        """How often the bottleneck's results agree with the unmodified model's, as its training run
        measured on held-out frames (top-1 agreement; fidelity mAP@0.5 for detectors), and where that
        number comes from; (None, "") when the checkpoint has no record."""
        heldout = (dep.bottleneck_metadata or {}).get("heldout", {})
        for metric in ("top1_agreement", "fidelity_map50"):
            if isinstance(heldout.get(metric), (int, float)):
                return (float(heldout[metric]),
                        f"checkpoint held-out {metric} ({heldout.get('frames', '?')} frames)")
        return None, ""

    def encode(self, enc: "OnboardEncoder", frame: "PreparedFrame", split_index: int | None):
        if enc.entropy_codec is None:
            raise ValueError("bottleneck mode needs a bottleneck checkpoint: set bottleneck_checkpoint")
        return (enc.entropy_codec, enc.entropy_codec.encode(frame.tensor),
                enc.dep.bottleneck.config.injection_split)

    def decode(self, dec: "EdgeDecoder", header: PayloadHeader, body: memoryview) -> DecodedFrame:
        injection = dec.dep.bottleneck.config.injection_split
        if header.split_index != injection:
            raise ShapeMismatch(f"bottleneck payload for injection point {header.split_index}, "
                                f"this bottleneck injects at {injection}")
        latent = dec.entropy_codec.decode_latent(body, header)
        with torch.no_grad():
            features = dec.dep.bottleneck.g_s(latent)
        return DecodedFrame(header, features, header.split_index, latent)

    def model_hash(self, dep: "Deployment") -> str | None:
        if not dep.bottleneck_hash:
            return None
        return hashlib.sha256((dep.backbone.weights_hash + dep.bottleneck_hash).encode()).hexdigest()


class ImagePayloads:
    """The model-input crop, or the whole camera frame, as an image file (full offload)."""

    def split_index(self, dep: "Deployment") -> int | None:
        return 0

    def checkpoint_fidelity(self, dep: "Deployment") -> tuple[float | None, str]:
        return None, ""   # the codec's: the backbone's fidelity record (profiling/fidelity.py)

    def encode(self, enc: "OnboardEncoder", frame: "PreparedFrame", split_index: int | None):
        pixels = frame.crop if enc.image_resolution == "model" else frame.rgb
        return enc.image_codec, enc.image_codec.encode(pixels), 0

    def decode(self, dec: "EdgeDecoder", header: PayloadHeader, body: memoryview) -> DecodedFrame:
        dep = dec.dep
        size = dep.input_size
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
            rgb = dep.model_pixels(rgb)
        return DecodedFrame(header, dep.pixels_to_tensor(rgb), 0)

    def model_hash(self, dep: "Deployment") -> str | None:
        return dep.backbone.weights_hash


PAYLOAD_MODES = {"split": SplitPayloads(), "bottleneck": BottleneckPayloads(), "image": ImagePayloads()}
if set(PAYLOAD_MODES) != set(OFFLOAD_MODES):
    raise ImportError(f"offloading modes {sorted(OFFLOAD_MODES)} and their implementations "
                      f"{sorted(PAYLOAD_MODES)} differ: implement each registered mode here")
