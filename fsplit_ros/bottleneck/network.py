"""The FrankenSplit bottleneck: light encoder g_a, factorized prior, decoder blueprint g_s.

Onboard: z = g_a(x), z_hat = round(z), entropy-coded with CompressAI's EntropyBottleneck.
Edge: h_tilde = g_s(z_hat) reconstructs the backbone's shallow features h at the injection point,
and the unchanged backbone tail runs on h_tilde. Only g_a, g_s and the entropy model are trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from torch import nn


@dataclass(frozen=True)
class BottleneckConfig:
    backbone: str              # fsplit backbone name the decoder's target features belong to
    injection_split: int       # split index whose output g_s reconstructs
    target_channels: int       # channels of h at the injection point
    target_stride: int         # spatial reduction of h relative to the input (8 for the defaults)
    input_size: int = 224
    latent_channels: int = 48
    encoder_channels: int = 48
    decoder_channels: int = 96

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.input_size // 8
        return (self.latent_channels, side, side)


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class FrankenSplitBottleneck(nn.Module):
    def __init__(self, config: BottleneckConfig):
        super().__init__()
        if config.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {config.input_size}")
        if config.target_stride not in (4, 8):
            raise ValueError(f"the decoder blueprint supports target stride 4 or 8, got "
                             f"{config.target_stride}")
        self.config = config
        e, c, d = config.encoder_channels, config.latent_channels, config.decoder_channels
        # g_a: three strided 5x5 convolutions with GDN (stride 8 overall); ~124K parameters at 48/48.
        self.g_a = nn.Sequential(_conv(3, e, 5, 2), GDN(e), _conv(e, e, 5, 2), GDN(e), _conv(e, c, 5, 2))
        # g_s: convolutional blueprint for CNN tails (runs on the edge, so it may be heavier).
        up = [nn.Upsample(scale_factor=2, mode="nearest")] if config.target_stride == 4 else []
        self.g_s = nn.Sequential(_conv(c, d, 3), GDN(d, inverse=True), *up, _conv(d, d, 3),
                                 GDN(d, inverse=True), _conv(d, config.target_channels, 3))
        self.entropy_bottleneck = EntropyBottleneck(c)

    def encoder_parameter_count(self) -> int:
        return sum(p.numel() for p in self.g_a.parameters())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training/evaluation pass: (h_tilde, likelihoods) with noise-relaxed quantisation."""
        z = self.g_a(x)
        z_tilde, likelihoods = self.entropy_bottleneck(z)
        return self.g_s(z_tilde), likelihoods

    def aux_loss(self) -> torch.Tensor:
        """CompressAI's quantile loss; it keeps the CDF tables' support right."""
        return self.entropy_bottleneck.loss()

    def update_tables(self) -> None:
        """Recompute the quantized CDF tables (only after training, before saving)."""
        self.entropy_bottleneck.update(force=True)

    def has_tables(self) -> bool:
        return self.entropy_bottleneck._quantized_cdf.numel() > 0

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> tuple[list[bytes], tuple[int, ...]]:
        """Onboard: image tensor (N,3,H,W) -> one rANS bitstream per image and the latent shape."""
        if not self.has_tables():
            raise RuntimeError("entropy tables are missing: load a trained checkpoint (they are "
                               "computed once by update_tables() before saving)")
        z = self.g_a(x)
        return self.entropy_bottleneck.compress(z), tuple(z.shape[1:])

    @torch.no_grad()
    def decompress(self, strings: list[bytes], latent_shape: tuple[int, ...],
                   max_abs_latent: float | None = None) -> torch.Tensor:
        """Edge: bitstreams -> reconstructed shallow features h_tilde (N,C_h,h,w)."""
        if not self.has_tables():
            raise RuntimeError("entropy tables are missing: load a trained checkpoint")
        z_hat = self.entropy_bottleneck.decompress(strings, tuple(latent_shape[-2:]))
        if max_abs_latent is not None and not bool(z_hat.abs().le(max_abs_latent).all()):
            raise ValueError(f"decoded latent outside +-{max_abs_latent}: not a stream of this encoder")
        return self.g_s(z_hat)
