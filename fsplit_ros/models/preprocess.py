"""Camera frame -> model input tensor, following the model's own data config (timm style)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def resize_center_crop(rgb: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    """Resize the shorter side to size/crop_pct, then take the central size x size crop (uint8)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    short = int(math.floor(size / crop_pct))
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def normalize(rgb_crop: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 HxWx3 (or NxHxWx3) -> float NCHW, normalised with the model's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(rgb_crop)).float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    x = x.permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def preprocess_rgb(rgb: np.ndarray, size: int, crop_pct: float, mean, std) -> torch.Tensor:
    return normalize(resize_center_crop(rgb, size, crop_pct), mean, std)
