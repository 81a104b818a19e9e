"""Bottleneck-mode codec: FrankenSplit's learned encoder + rANS bitstream (CompressAI).

CompressAI's C++ rANS decoder trusts its input: it reads 32-bit words with no bounds check, so a
hostile or garbage body could read past the buffer. Its reads are bounded, though: every decode
step reads at most one word, and escape (bypass) runs only continue while they consume all-ones
nibbles, so at most 4*numel + 16*len(body) bytes past the start are ever read. The body is
therefore checked for what an encoder can produce (length, alignment, initial state) and decoded
from a copy padded with that many zero bytes; decoded latents outside any trained range are
rejected instead of reaching the tail.
"""
from __future__ import annotations

import torch

from fsplit_ros.bottleneck.network import FrankenSplitBottleneck
from fsplit_ros.codecs.base import Encoded
from fsplit_ros.payload.errors import CorruptPayload, ShapeMismatch
from fsplit_ros.payload.format import PayloadHeader


RANS64_L = 1 << 31             # rans64's lower state bound: a flushed encoder state is >= this
MAX_BITS_PER_ELEMENT = 64      # far above any trained model's rate; larger bodies are not ours
MAX_ABS_LATENT = 1 << 12       # |z_hat| of trained latents is tens at most


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

    @torch.no_grad()
    def decode(self, body: memoryview, header: PayloadHeader) -> torch.Tensor:
        """The features at the injection point (this bottleneck's own decoder g_s)."""
        return self.bottleneck.g_s(self.decode_latent(body, header))

    @torch.no_grad()
    def decode_latent(self, body: memoryview, header: PayloadHeader) -> torch.Tensor:
        """The rounded latent z_hat, checked: what every decoder of this encoder reads (issue 19)."""
        if tuple(header.shape) != self.latent_shape:
            raise ShapeMismatch(f"latent shape {header.shape} does not match this bottleneck's "
                                f"{self.latent_shape}")
        numel = 1
        for dim in self.latent_shape:
            numel *= dim
        if len(body) < 8 or len(body) % 4 or len(body) > MAX_BITS_PER_ELEMENT * numel // 8:
            raise CorruptPayload(f"rANS body of {len(body)} bytes cannot come from this encoder")
        if int.from_bytes(bytes(body[:8]), "little") < RANS64_L:
            raise CorruptPayload("rANS body has an invalid initial state")
        padded = bytes(body) + bytes(4 * numel + 16 * len(body) + 16)
        try:
            return self.bottleneck.decompress_latent([padded], header.shape, max_abs_latent=MAX_ABS_LATENT)
        except (RuntimeError, ValueError) as exc:
            raise CorruptPayload(f"rANS bitstream does not decode: {exc}") from exc
