"""Split-mode codecs for a natural-bottleneck tensor: fp16, or 8-bit affine quantisation with one
(min, scale) per tensor or per channel, each optionally followed by zlib."""
from __future__ import annotations

import zlib

import numpy as np
import torch

from fsplit_ros.codecs.base import Encoded
from fsplit_ros.modes import MODES
from fsplit_ros.payload.errors import CorruptPayload, ShapeMismatch
from fsplit_ros.payload.format import PayloadHeader

TENSOR_CODECS = MODES["split"].codec_names   # fp16 | uint8-tensor | uint8-channel, each with or without +zlib


def _inflate_bounded(body: memoryview, expected: int) -> bytes:
    """zlib-decompress at most `expected` bytes: a zlib bomb cannot allocate more than that."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(bytes(body), expected + 1)
    except zlib.error as exc:
        raise CorruptPayload(f"zlib body does not decompress: {exc}") from exc
    if len(out) != expected or inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise CorruptPayload(f"zlib body inflates to {len(out)}{'+' if inflater.unconsumed_tail else ''} "
                             f"bytes, expected {expected}")
    return out


def _finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """An encoder of real activations never sends NaN/inf (nor a min/scale whose dequantisation
    overflows); such a tensor would turn every logit into NaN, so it is corrupt, not a result."""
    if not np.isfinite(x.numpy()).all():   # numpy: no thread-pool wake-up for a small check
        raise CorruptPayload(f"non-finite {what} in the tensor: not produced by an fsplit encoder")
    return x


class TensorCodec:
    mode = "split"

    def __init__(self, name: str = "uint8-channel+zlib", zlib_level: int = 6):
        if name not in TENSOR_CODECS:
            raise ValueError(f"unknown tensor codec '{name}': choose one of {TENSOR_CODECS}")
        self.name = name
        self.base, _, post = name.partition("+")
        self.zlib = post == "zlib"
        self.zlib_level = zlib_level

    def _layout(self, shape) -> str:
        """Per-channel scales need spatial maps; a flat vector (e.g. pooled features) would get one
        scale per element, so it falls back to one scale for the tensor."""
        return "uint8-tensor" if self.base == "uint8-channel" and len(shape) < 3 else self.base

    def _scale_count(self, shape) -> int:
        return {"fp16": 0, "uint8-tensor": 1, "uint8-channel": shape[1]}[self._layout(shape)]

    def encode(self, x: torch.Tensor) -> Encoded:
        x = x.detach().float().cpu()
        shape = tuple(x.shape)
        layout = self._layout(shape)
        if layout == "fp16":
            raw, dtype = x.half().numpy().tobytes(), "float16"
        else:
            groups = x.reshape(1, -1) if layout == "uint8-tensor" else x.transpose(0, 1).reshape(shape[1], -1)
            lo = groups.min(dim=1).values
            scale = (groups.max(dim=1).values - lo).clamp_min(1e-12) / 255.0
            q = ((groups - lo[:, None]) / scale[:, None]).round_().clamp_(0, 255).to(torch.uint8)
            if layout == "uint8-channel":
                q = q.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)
            params = torch.stack([lo, scale], dim=1).numpy().astype("<f4").tobytes()
            raw, dtype = params + q.contiguous().numpy().tobytes(), "uint8"
        body = zlib.compress(raw, self.zlib_level) if self.zlib else raw
        return Encoded(body=body, shape=shape, dtype=dtype)

    def decode(self, body: memoryview, header: PayloadHeader) -> torch.Tensor:
        shape = header.shape
        want_dtype = "float16" if self.base == "fp16" else "uint8"
        if header.dtype != want_dtype:
            raise ShapeMismatch(f"{self.name} carries {want_dtype}, the header declares {header.dtype}")
        if len(shape) < 2:
            raise ShapeMismatch(f"split tensors are (N, C, ...), got shape {shape}")
        layout = self._layout(shape)
        n_params = self._scale_count(shape)
        expected = header.tensor_bytes + 8 * n_params
        raw = _inflate_bounded(body, expected) if self.zlib else bytes(body)
        if len(raw) != expected:
            raise ShapeMismatch(f"{self.name} body has {len(raw)} bytes, shape {shape} needs {expected}")
        if layout == "fp16":
            return _finite(torch.from_numpy(np.frombuffer(raw, "<f2").reshape(shape).astype(np.float32)),
                           "fp16 values")
        params = np.frombuffer(raw, "<f4", count=2 * n_params).reshape(n_params, 2)
        q = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=8 * n_params).reshape(shape).astype(np.float32))
        view = (1, -1) + (1,) * (len(shape) - 2) if layout == "uint8-channel" else (1,) * len(shape)
        lo = torch.from_numpy(params[:, 0].copy()).view(view)
        scale = torch.from_numpy(params[:, 1].copy()).view(view)
        if not (torch.isfinite(lo).all() and torch.isfinite(scale).all()):
            raise CorruptPayload("non-finite quantisation parameters")
        return _finite(q * scale + lo, "dequantised values (min/scale out of range)")
