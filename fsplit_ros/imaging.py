"""sensor_msgs/Image fields -> RGB uint8, ROS-free. Validates sizes, step and data length before
touching the buffer, so a malformed frame is rejected with one clear error, never a crash."""
from __future__ import annotations

import cv2
import numpy as np

# encoding -> (numpy dtype, channels)
_LAYOUT = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "mono8": ("u1", 1), "8UC1": ("u1", 1), "8UC3": ("u1", 3), "mono16": ("u2", 1), "16UC1": ("u2", 1),
    "32FC1": ("f4", 1), "yuv422": ("u1", 2), "uyvy": ("u1", 2), "yuv422_yuy2": ("u1", 2),
    "yuyv": ("u1", 2), "bayer_rggb8": ("u1", 1), "bayer_bggr8": ("u1", 1), "bayer_gbrg8": ("u1", 1),
    "bayer_grbg8": ("u1", 1),
}
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB, "8UC3": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB, "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    # ROS names the first 2x2 tile; OpenCV the tile starting at the second row/column.
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
SUPPORTED_ENCODINGS = tuple(_LAYOUT)


# Longest/shortest side. The model input is a centre crop of the frame scaled so its SHORT side
# fits, so a 2x8192 frame would be upscaled to 256x1M pixels (1.6 GB) for a 224x224 crop; no
# camera has such a ratio (panoramas are 2:1 to 8:1).
MAX_ASPECT_RATIO = 32


class ImageEncodingError(ValueError):
    """The frame cannot be converted; the message says what is wrong with it and `kind` names the
    problem class (for counting and for logging each class once)."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


def to_rgb8(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False,
            max_side: int = 8192, max_aspect: float = MAX_ASPECT_RATIO) -> np.ndarray:
    if encoding not in _LAYOUT:
        raise ImageEncodingError(f"unsupported image encoding '{encoding}': use one of "
                                 f"{', '.join(SUPPORTED_ENCODINGS)}", "encoding")
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"empty image {width}x{height}", "empty")
    if height > max_side or width > max_side:
        raise ImageEncodingError(f"image {width}x{height} exceeds max_image_side={max_side}", "too_large")
    if max(height, width) > max_aspect * min(height, width):
        raise ImageEncodingError(f"image {width}x{height} has an aspect ratio beyond {max_aspect}:1 (its "
                                 f"centre crop would need a huge upscale)", "aspect")
    dtype, channels = _LAYOUT[encoding]
    dt = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * channels * dt.itemsize
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageEncodingError(f"{encoding} needs an even width, got {width}", "odd_width")
    if step < row_bytes:
        raise ImageEncodingError(f"step {step} is smaller than a row of {width} {encoding} pixels "
                                 f"({row_bytes} bytes)", "step")
    if len(data) < step * (height - 1) + row_bytes:
        raise ImageEncodingError(f"image data has {len(data)} bytes, {width}x{height} {encoding} with "
                                 f"step {step} needs {step * height}", "short_data")
    buf = np.frombuffer(data, dtype=np.uint8, count=step * (height - 1) + row_bytes)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    img = np.ascontiguousarray(rows).view(dt).reshape(height, width, channels)
    if dtype != "u1":   # depth / 16-bit / float: scale the valid range to 8 bits for the model
        img = img.astype(np.float32)[..., 0]
        valid = np.isfinite(img)
        lo, hi = (float(img[valid].min()), float(img[valid].max())) if valid.any() else (0.0, 1.0)
        img = np.where(valid, (img - lo) * (255.0 / max(hi - lo, 1e-6)), 0).astype(np.uint8)
        return np.repeat(img[..., None], 3, axis=2)
    if channels == 1:
        if encoding in _TO_RGB:
            return cv2.cvtColor(img[..., 0], _TO_RGB[encoding])
        return np.repeat(img, 3, axis=2)
    if encoding == "rgb8":
        return img
    return cv2.cvtColor(img, _TO_RGB[encoding])
