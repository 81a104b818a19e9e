"""The FrankenSplit bottleneck: light encoder g_a, factorized prior, decoder blueprint g_s.

Onboard: z = g_a(x), z_hat = round(z), entropy-coded with CompressAI's EntropyBottleneck.
Edge: h_tilde = g_s(z_hat) reconstructs the backbone's shallow features h at the injection point,
and the unchanged backbone tail runs on h_tilde. Only g_a, g_s and the entropy model are trained.

Two encoders (BottleneckConfig.encoder):
  "image" the paper's g_a: three strided 5x5 convolutions with GDN on the pixels, from scratch.
  "head"  a trainable copy of the backbone's own layers up to the injection point (BatchNorm
          statistics frozen) followed by a small GDN transform to the latent. It starts out
          computing h exactly, so head distillation only has to learn what to drop. With the
          ~1,500 offline training frames and CPU minutes this project trains on, it reaches useful
          agreement (Lite0, 1,500 steps: 10.5 KB/frame, 81 % top-1 agreement held out), where the
          pixel encoder after 3,000 steps stayed at 20 % (at 2.7 KB). It costs more onboard than
          the pixel encoder (BENCHMARKS.md, section 2), still well below the whole model.
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
    encoder: str = "image"     # "image" (the paper's g_a) or "head" (see the module docstring)
    transform_stride: int = 1  # "head" only: 2 = the transform halves the grid (4x fewer latent
                               # positions; g_s upsamples back), for large feature maps (NanoDet)
    head_split: int | None = None     # "head" only: backbone units copied into g_a (None = all up
                                      # to injection_split). A shallower head is a cheaper encoder;
                                      # g_s then also learns the layers between the two splits
    head_channels: int | None = None  # channels / stride of the output of head_split (None = the
    head_stride: int | None = None    # target's): resolved from the backbone by the trainer
    transform: str = "gdn"     # "head" only: "gdn" = 3x3 conv, GDN, 3x3 conv (the first design);
                               # "light" = depthwise 3x3 (at the stride), 1x1, GDN, 1x1: 1x1-heavy,
                               # a fraction of the onboard time (BENCHMARKS.md, section 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def encoder_split(self) -> int:
        """Backbone units inside a "head" encoder."""
        return self.injection_split if self.head_split is None else self.head_split

    @property
    def encoder_head_channels(self) -> int:
        return self.target_channels if self.head_channels is None else self.head_channels

    @property
    def encoder_head_stride(self) -> int:
        return self.target_stride if self.head_stride is None else self.head_stride

    @property
    def latent_stride(self) -> int:
        """The "head" encoder keeps its head's grid (or halves it, transform_stride 2); the
        "image" encoder is stride 8."""
        return self.encoder_head_stride * self.transform_stride if self.encoder == "head" else 8

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.input_size // self.latent_stride
        return (self.latent_channels, side, side)


ENCODERS = ("image", "head")
TRANSFORMS = ("gdn", "light")


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def backbone_head(config: BottleneckConfig) -> nn.Module:
    """The backbone's layers up to the injection split, architecture only (weights come from the
    checkpoint, or from the teacher when training starts). Never downloads."""
    from fsplit_ros.models.backbones import build_architecture
    from fsplit_ros.splitting import SplittableModel
    return SplittableModel(build_architecture(config.backbone)).head(config.encoder_split)


def head_transform(kind: str, head_channels: int, width: int, latent_channels: int,
                   stride: int = 1) -> nn.Sequential:
    """The learned part of a "head" encoder, from the head's channels to the latent.

    "light" spends its work in 1x1 convolutions (fast on a CPU), with one depthwise 3x3 that
    carries the stride: at Lite0's blocks.1.0 (24x56x56) it costs well under 1 ms at 1 thread."""
    if kind == "gdn":
        return nn.Sequential(_conv(head_channels, width, 3, stride), GDN(width),
                             _conv(width, latent_channels, 3))
    if kind == "light":
        return nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, stride, 1, groups=head_channels),
                             nn.Conv2d(head_channels, width, 1), GDN(width),
                             nn.Conv2d(width, latent_channels, 1))
    raise ValueError(f"unknown transform '{kind}': use one of {TRANSFORMS}")


class HeadEncoder(nn.Module):
    """g_a = transform(head(x)): the backbone's head (trainable, BatchNorm statistics frozen, as
    the tail expects them) and a small transform from the head's channels to the latent."""

    def __init__(self, head: nn.Module, head_channels: int, width: int, latent_channels: int,
                 stride: int = 1, transform: str = "gdn"):
        super().__init__()
        self.head = head
        self.transform = head_transform(transform, head_channels, width, latent_channels, stride)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.head.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.head(x))


class FrankenSplitBottleneck(nn.Module):
    def __init__(self, config: BottleneckConfig, head: nn.Module | None = None):
        """`head`: the initial weights of a "head" encoder's backbone layers (the trainer passes a
        copy of the teacher's); None builds the architecture for a checkpoint to fill in."""
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder '{config.encoder}': use one of {ENCODERS}")
        if config.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {config.input_size}")
        if config.target_stride not in (4, 8):
            raise ValueError(f"the decoder blueprint supports target stride 4 or 8, got "
                             f"{config.target_stride}")
        if head is not None and config.encoder != "head":
            raise ValueError(f"a head was given, but the encoder is '{config.encoder}'")
        if config.transform_stride not in (1, 2) or (config.transform_stride != 1 and config.encoder != "head"):
            raise ValueError(f"transform_stride must be 1, or 2 with the 'head' encoder; got "
                             f"{config.transform_stride} with '{config.encoder}'")
        if config.transform not in TRANSFORMS or (config.transform != "gdn" and config.encoder != "head"):
            raise ValueError(f"transform must be one of {TRANSFORMS} ('light' needs the 'head' "
                             f"encoder); got '{config.transform}' with '{config.encoder}'")
        if config.head_split is not None and (config.encoder != "head" or not
                                              0 < config.head_split <= config.injection_split):
            raise ValueError(f"head_split must lie in 1..injection_split ({config.injection_split}) "
                             f"with the 'head' encoder; got {config.head_split} with '{config.encoder}'")
        if config.latent_stride % config.target_stride:
            raise ValueError(f"the latent grid (stride {config.latent_stride}) must be the target's "
                             f"(stride {config.target_stride}) or coarser: raise transform_stride")
        if config.input_size % config.latent_stride:
            raise ValueError(f"input_size {config.input_size} is not a multiple of the latent stride "
                             f"{config.latent_stride}")
        self.config = config
        e, c, d = config.encoder_channels, config.latent_channels, config.decoder_channels
        if config.encoder == "head":
            self.g_a = HeadEncoder(head if head is not None else backbone_head(config),
                                   config.encoder_head_channels, e, c, config.transform_stride,
                                   config.transform)
        else:
            # three strided 5x5 convolutions with GDN (stride 8 overall); ~124K parameters at 48/48.
            self.g_a = nn.Sequential(_conv(3, e, 5, 2), GDN(e), _conv(e, e, 5, 2), GDN(e),
                                     _conv(e, c, 5, 2))
        # g_s: convolutional blueprint for CNN tails (runs on the edge, so it may be heavier).
        upsample = config.latent_stride // config.target_stride
        up = [nn.Upsample(scale_factor=upsample, mode="nearest")] if upsample > 1 else []
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
