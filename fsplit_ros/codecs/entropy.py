"""Bottleneck-mode codec: FrankenSplit's learned encoder + rANS bitstream (CompressAI)."""
from __future__ import annotations

import torch

from fsplit_ros.bottleneck.network import FrankenSplitBottleneck
from fsplit_ros.codecs.base import Encoded
from fsplit_ros.payload.errors import CorruptPayload, ShapeMismatch
from fsplit_ros.payload.format import PayloadHeader


class EntropyCodec:
    mode = "bottleneck"
    name = "rans-factorized"

    def __init__(self, bottleneck: FrankenSplitBottleneck):
        self.bottleneck = bottleneck
        self.latent_shape = (1, *bottleneck.config.latent_shape)

    def encode(self, x: torch.Tensor) -> Encoded:
        """x: the normalised model input (1,3,H,W)."""
        strings, latent = self.bottleneck.compress(x)
        return Encoded(body=strings[0], shape=(1, *latent), dtype="int8")

    def decode(self, body: memoryview, header: PayloadHeader) -> torch.Tensor:
        if tuple(header.shape) != self.latent_shape:
            raise ShapeMismatch(f"latent shape {header.shape} does not match this bottleneck's "
                                f"{self.latent_shape}")
        try:
            return self.bottleneck.decompress([bytes(body)], header.shape)
        except (RuntimeError, ValueError) as exc:
            raise CorruptPayload(f"rANS bitstream does not decode: {exc}") from exc
