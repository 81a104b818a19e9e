"""Image-mode codec (full offload, split point 0): the model-input crop as JPEG, WebP or PNG."""
from __future__ import annotations

import io

import cv2
import numpy as np
import PIL.Image

from fsplit_ros.codecs.base import Encoded
from fsplit_ros.modes import MODES
from fsplit_ros.payload.errors import CorruptPayload, ShapeMismatch
from fsplit_ros.payload.format import PayloadHeader

# How OpenCV writes each of image mode's codecs (their names and ids: fsplit_ros/modes.py).
_OPENCV = {"jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY),
           "png": (".png", cv2.IMWRITE_PNG_COMPRESSION)}
IMAGE_FORMATS = {name: _OPENCV[name] for name in MODES["image"].codec_names}   # KeyError: a codec to implement


class ImageCodec:
    mode = "image"

    def __init__(self, name: str = "jpeg", quality: int = 95):
        if name not in IMAGE_FORMATS:
            raise ValueError(f"unknown image codec '{name}': choose one of {sorted(IMAGE_FORMATS)}")
        if name == "png":
            quality = 0 if quality is None else min(max(int(quality), 0), 9)   # zlib level
        elif not 1 <= int(quality) <= 100:
            raise ValueError(f"{name} quality must be 1..100, got {quality}")
        self.name, self.quality = name, int(quality)

    def encode(self, rgb: np.ndarray) -> Encoded:
        ext, flag = IMAGE_FORMATS[self.name]
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [int(flag), self.quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {self.name}")
        return Encoded(body=buf.tobytes(), shape=tuple(rgb.shape), dtype="uint8", quality=self.quality)

    def decode(self, body: memoryview, header: PayloadHeader) -> np.ndarray:
        if len(header.shape) != 3 or header.shape[2] != 3:
            raise ShapeMismatch(f"image payload must declare HxWx3, got {header.shape}")
        # Read the size from the file header before decoding pixels: a small file may declare a
        # huge image (decompression bomb).
        try:
            with PIL.Image.open(io.BytesIO(bytes(body))) as probe:
                width, height = probe.size
        except Exception as exc:   # Pillow raises many types for garbage
            raise CorruptPayload(f"{self.name} body is not a readable image: {exc}") from exc
        if (height, width) != tuple(header.shape[:2]):
            raise ShapeMismatch(f"{self.name} file is {width}x{height}, header declares {header.shape}")
        bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CorruptPayload(f"{self.name} body does not decode")
        if tuple(bgr.shape) != tuple(header.shape):
            raise ShapeMismatch(f"decoded image is {bgr.shape}, header declares {header.shape}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
