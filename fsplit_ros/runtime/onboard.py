"""Robot side: camera frame -> payload for the current mode (or the whole model in `local`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fsplit_ros.codecs import EntropyCodec, ImageCodec, TensorCodec
from fsplit_ros.modes import MODE_NAMES
from fsplit_ros.payload import PayloadHeader, pack_payload
from fsplit_ros.runtime.deployment import Deployment
from fsplit_ros.runtime.payload_modes import PAYLOAD_MODES

MODES = MODE_NAMES
IMAGE_RESOLUTIONS = ("model", "native")


@dataclass
class PreparedFrame:
    crop: np.ndarray          # uint8 RGB the model sees: center crop or letterbox (image mode "model")
    tensor: torch.Tensor      # normalised (1,3,H,W)
    rgb: np.ndarray           # the camera frame (image mode, resolution "native")
    width: int                # original camera image size
    height: int


class OnboardEncoder:
    def __init__(self, deployment: Deployment, split_index: int | None = None,
                 tensor_codec: str = "uint8-channel+zlib", image_codec: str = "jpeg",
                 image_quality: int = 95, image_resolution: str = "model"):
        """image_resolution: "model" sends the model-input crop; "native" the whole camera frame,
        which is what image_transport's compressed JPEG offload does today."""
        if image_resolution not in IMAGE_RESOLUTIONS:
            raise ValueError(f"image_resolution must be one of {IMAGE_RESOLUTIONS}")
        self.image_resolution = image_resolution
        self.dep = deployment
        self.hashes = deployment.model_hashes()
        self.tensor_codec = TensorCodec(tensor_codec)
        self.image_codec = ImageCodec(image_codec, image_quality)
        self.entropy_codec = EntropyCodec(deployment.bottleneck) if deployment.bottleneck else None
        self.split_index = split_index or deployment.compressive_split_indices()[0]
        deployment.split_point(self.split_index)   # validates
        self._heads: dict[int, torch.nn.Module] = {}

    def available_modes(self) -> list[str]:
        """local, and every offloading mode this deployment can send (a bottleneck needs its checkpoint)."""
        return [m for m in MODES if m not in PAYLOAD_MODES or m in self.hashes]

    def prepare(self, rgb: np.ndarray) -> PreparedFrame:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        crop = self.dep.model_pixels(rgb)
        return PreparedFrame(crop=crop, tensor=self.dep.pixels_to_tensor(crop), rgb=rgb,
                             width=rgb.shape[1], height=rgb.shape[0])

    def head(self, index: int) -> torch.nn.Module:
        if index not in self._heads:
            self._heads[index] = self.dep.splittable.head(index)
        return self._heads[index]

    @torch.no_grad()
    def predict_local(self, frame: PreparedFrame) -> torch.Tensor:
        return self.dep.backbone.model(frame.tensor)

    def encode(self, frame: PreparedFrame, mode: str, split_index: int | None = None) -> bytes:
        """The payload for `mode` ("split", "bottleneck" or "image")."""
        return self.encode_frame(frame, mode, split_index)[1]

    @torch.no_grad()
    def encode_frame(self, frame: PreparedFrame, mode: str, split_index: int | None = None
                     ) -> tuple[PayloadHeader, bytes]:
        """The payload for `mode` and its header (what the ROS message mirrors)."""
        if mode not in PAYLOAD_MODES:
            raise ValueError(f"mode '{mode}' sends no payload; choose one of {', '.join(PAYLOAD_MODES)}")
        codec, encoded, index = PAYLOAD_MODES[mode].encode(self, frame, split_index)
        header = PayloadHeader(mode=mode, codec=codec.name, dtype=encoded.dtype,
                               model_hash=self.hashes[mode], split_index=index, shape=encoded.shape,
                               image_width=frame.width, image_height=frame.height,
                               quality=encoded.quality)
        return header, pack_payload(header, encoded.body)
