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

The third design ("head" with backbone_head, transform "linear", decoder "residual" or "linear"):
the head is the backbone's own, frozen, up to a deeper point (Lite0: blocks.5.0, 192x7x7), lent by
the deployment instead of stored; g_a is one linear map started as the features' principal
components (init_from_pca: classical transform coding, near-exact from the first step) and g_s its
inverse (plus, "residual", a GDN branch that starts at zero). KD through the frozen tail can then
learn what transform coding misses (it helped NanoDet; it cost Lite0 agreement: the shipped Lite0
file is the principal components alone).
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
                               # positions; g_s upsamples back), for large feature maps (NanoDet);
                               # 4 ("linear" only) quarters it
    head_split: int | None = None     # "head" only: backbone units copied into g_a (None = all up
                                      # to injection_split). A shallower head is a cheaper encoder;
                                      # g_s then also learns the layers between the two splits
    head_channels: int | None = None  # channels / stride of the output of head_split (None = the
    head_stride: int | None = None    # target's): resolved from the backbone by the trainer
    transform: str = "gdn"     # "head" only: "gdn" = 3x3 conv, GDN, 3x3 conv (the first design);
                               # "light" = depthwise 3x3 (at the stride), 1x1, GDN, 1x1: 1x1-heavy,
                               # a fraction of the onboard time (BENCHMARKS.md, section 2);
                               # "linear" = one 1x1 convolution (a learned transform-coding basis,
                               # started from the features' principal components: init_from_pca)
    backbone_head: bool = False  # "head" only: the head is the backbone's own, unchanged (trained
                                 # with freeze_head), so the checkpoint does not store it: the
                                 # deployment lends its backbone's layers (attach_backbone_head)
    decoder: str = "gdn"       # g_s: "gdn" = 3x3 conv, IGDN, 3x3 conv, IGDN, 3x3 conv; "residual" =
                               # a linear map (the inverse basis) plus that GDN branch, whose last
                               # layer starts at zero: g_s starts as the exact inverse of g_a;
                               # "linear" = the inverse basis alone (an untrained branch adds zeros)

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
    def target_side(self) -> int:
        """The target map's side ("same"-padded strides round up: Lite2's 260 input -> 9 at 32)."""
        return -(-self.input_size // self.target_stride)

    @property
    def latent_stride(self) -> int:
        """The "head" encoder keeps its head's grid (or halves it, transform_stride 2); the
        "image" encoder is stride 8."""
        return self.encoder_head_stride * self.transform_stride if self.encoder == "head" else 8

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = -(-self.input_size // self.latent_stride)   # "same"-padded strides round up (Lite2: 260 -> 9)
        return (self.latent_channels, side, side)


ENCODERS = ("image", "head")
DECODERS = ("gdn", "residual", "linear")
TARGET_STRIDES = (4, 8, 16, 32)   # 16/32: a deep injection point (a 14x14 or 7x7 map at 224)
TRANSFORMS = ("gdn", "light", "linear")


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
    if kind == "linear":
        return nn.Sequential(nn.Conv2d(head_channels, latent_channels, stride, stride))
    raise ValueError(f"unknown transform '{kind}': use one of {TRANSFORMS}")


class HeadEncoder(nn.Module):
    """g_a = transform(head(x)): the backbone's head (trainable, BatchNorm statistics frozen, as
    the tail expects them) and a small transform from the head's channels to the latent."""

    def __init__(self, head: nn.Module | None, head_channels: int, width: int, latent_channels: int,
                 stride: int = 1, transform: str = "gdn", borrowed: bool = False):
        """borrowed: the head is the backbone's own module, lent, not owned: kept out of the
        state dict, the parameters and .to()/.train() (None until attach_backbone_head)."""
        super().__init__()
        self.borrowed = borrowed
        if borrowed:
            object.__setattr__(self, "head", head)
        else:
            self.head = head
        self.transform = head_transform(transform, head_channels, width, latent_channels, stride)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.borrowed:
            return self
        for m in self.head.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this bottleneck encodes with its backbone's own layers: attach them "
                               "first (Deployment.load / attach_bottleneck does)")
        return self.transform(self.head(x))


def gdn_decoder(latent_channels: int, width: int, target_channels: int, upsample: int) -> nn.Sequential:
    """The convolutional decoder blueprint for CNN tails (runs on the edge, so it may be heavier)."""
    up = [nn.Upsample(scale_factor=upsample, mode="nearest")] if upsample > 1 else []
    return nn.Sequential(_conv(latent_channels, width, 3), GDN(width, inverse=True), *up,
                         _conv(width, width, 3), GDN(width, inverse=True),
                         _conv(width, target_channels, 3))


class ResidualDecoder(nn.Module):
    """g_s = linear(z) + branch(z): a linear map back to the target grid (the inverse of a "linear"
    g_a's basis: a transposed convolution with kernel = stride = the latent's upsampling) and the
    GDN blueprint, its last layer zero at the start. Trained from a principal-component start, it
    begins as classical transform coding and learns what the tail needs."""

    def __init__(self, latent_channels: int, width: int, target_channels: int, upsample: int,
                 branch: bool = True):
        """branch=False: the linear map alone (decoder "linear": classical transform coding, whose
        untrained branch would only add zeros and megabytes to the file)."""
        super().__init__()
        self.linear = nn.ConvTranspose2d(latent_channels, target_channels, upsample, upsample)
        self.branch = gdn_decoder(latent_channels, width, target_channels, upsample) if branch else None
        if self.branch is not None:
            nn.init.zeros_(self.branch[-1].weight)
            nn.init.zeros_(self.branch[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.linear(z)
        return out if self.branch is None else out + self.branch(z)


@torch.no_grad()
def init_from_pca(model: "FrankenSplitBottleneck", features: torch.Tensor, step: float) -> None:
    """Start a "linear" g_a and a "residual" or "linear" g_s as transform coding of `features` (N,C,H,W at the
    head's output): g_a projects each r x r patch (r = transform_stride) on the top principal
    components and divides by `step` (rounding z then quantizes each component with that step);
    g_s maps back. Decorrelated components suit the factorized prior, and the tail sees
    near-exact features from the first step on."""
    c = model.config
    if c.transform != "linear" or c.decoder not in ("residual", "linear"):
        raise ValueError("init_from_pca needs transform 'linear' and decoder 'residual' or 'linear'")
    if step <= 0:
        raise ValueError(f"the PCA quantization step must be > 0, got {step}")
    if features.dim() != 4 or features.shape[1] != c.encoder_head_channels:
        raise ValueError(f"features of shape {tuple(features.shape)} are not the head's output "
                         f"({c.encoder_head_channels} channels)")
    r, channels = c.transform_stride, features.shape[1]
    dims = channels * r * r
    if c.latent_channels > dims:
        raise ValueError(f"latent_channels {c.latent_channels} exceeds the {dims} values of a patch")
    # one mean per channel (a transposed convolution has one bias per output channel), tiled over
    # the patch in pixel_unshuffle's (channel, row, column) order, which is the kernels' layout
    mean = features.double().mean(dim=(0, 2, 3)).repeat_interleave(r * r)
    v = nn.functional.pixel_unshuffle(features.double(), r).permute(0, 2, 3, 1).reshape(-1, dims)
    _, eigenvectors = torch.linalg.eigh((v - mean).T @ (v - mean) / len(v))
    basis = eigenvectors.flip(1)[:, :c.latent_channels]                  # (dims, L), by variance
    encode = model.g_a.transform[0]
    encode.weight.copy_((basis.T / step).reshape(encode.weight.shape).float())
    encode.bias.copy_((-(basis.T @ mean) / step).float())
    decode = model.g_s.linear
    decode.weight.copy_((basis.T * step).reshape(decode.weight.shape).float())
    decode.bias.copy_(mean[::r * r].float())


class FrankenSplitBottleneck(nn.Module):
    def __init__(self, config: BottleneckConfig, head: nn.Module | None = None):
        """`head`: the initial weights of a "head" encoder's backbone layers (the trainer passes a
        copy of the teacher's); None builds the architecture for a checkpoint to fill in."""
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder '{config.encoder}': use one of {ENCODERS}")
        if config.encoder == "image" and config.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {config.input_size}")
        if config.target_stride not in TARGET_STRIDES:
            raise ValueError(f"the decoder blueprint supports target strides {TARGET_STRIDES}, got "
                             f"{config.target_stride}")
        if config.backbone_head and config.encoder != "head":
            raise ValueError("backbone_head needs the 'head' encoder")
        if head is not None and config.encoder != "head":
            raise ValueError(f"a head was given, but the encoder is '{config.encoder}'")
        strides = (1, 2, 4) if config.transform == "linear" else (1, 2)
        if config.transform_stride not in strides or (config.transform_stride != 1 and config.encoder != "head"):
            raise ValueError(f"transform_stride must be 1, or with the 'head' encoder 2 (4 with the "
                             f"'linear' transform); got {config.transform_stride} with "
                             f"'{config.encoder}' and '{config.transform}'")
        if config.transform not in TRANSFORMS or (config.transform != "gdn" and config.encoder != "head"):
            raise ValueError(f"transform must be one of {TRANSFORMS} ('light' needs the 'head' "
                             f"encoder); got '{config.transform}' with '{config.encoder}'")
        if config.decoder not in DECODERS:
            raise ValueError(f"unknown decoder '{config.decoder}': use one of {DECODERS}")
        if config.head_split is not None and (config.encoder != "head" or not
                                              0 < config.head_split <= config.injection_split):
            raise ValueError(f"head_split must lie in 1..injection_split ({config.injection_split}) "
                             f"with the 'head' encoder; got {config.head_split} with '{config.encoder}'")
        if config.latent_stride % config.target_stride:
            raise ValueError(f"the latent grid (stride {config.latent_stride}) must be the target's "
                             f"(stride {config.target_stride}) or coarser: raise transform_stride")
        if config.encoder == "image" and config.input_size % config.latent_stride:
            raise ValueError(f"input_size {config.input_size} is not a multiple of the latent stride "
                             f"{config.latent_stride}")
        self.config = config
        e, c, d = config.encoder_channels, config.latent_channels, config.decoder_channels
        if config.encoder == "head":
            if head is None and not config.backbone_head:
                head = backbone_head(config)
            self.g_a = HeadEncoder(head, config.encoder_head_channels, e, c, config.transform_stride,
                                   config.transform, borrowed=config.backbone_head)
        else:
            # three strided 5x5 convolutions with GDN (stride 8 overall); ~124K parameters at 48/48.
            self.g_a = nn.Sequential(_conv(3, e, 5, 2), GDN(e), _conv(e, e, 5, 2), GDN(e),
                                     _conv(e, c, 5, 2))
        upsample = config.latent_stride // config.target_stride
        self.g_s = (gdn_decoder(c, d, config.target_channels, upsample) if config.decoder == "gdn"
                    else ResidualDecoder(c, d, config.target_channels, upsample,
                                         branch=config.decoder == "residual"))
        self.entropy_bottleneck = EntropyBottleneck(c)

    def forward_from_head(self, head_features: torch.Tensor, straight_through: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() given the output of a "head" encoder's backbone layers (training with a frozen
        head that ends at the injection point: those are the teacher's h, computed once)."""
        return self._code(self.g_a.transform(head_features), straight_through)

    def attach_backbone_head(self, head: nn.Module) -> None:
        """Lend a backbone_head bottleneck its backbone's layers up to the encoder split (the
        caller checks they are the weights it trained with: metadata backbone_weights_hash)."""
        if not self.config.backbone_head:
            raise ValueError("this bottleneck owns its head; nothing to attach")
        object.__setattr__(self.g_a, "head", head)

    def encoder_parameter_count(self) -> int:
        return sum(p.numel() for p in self.g_a.parameters())

    def forward(self, x: torch.Tensor, straight_through: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Training/evaluation pass: (h_tilde, likelihoods) with noise-relaxed quantisation."""
        return self._code(self.g_a(x), straight_through)

    def _code(self, z: torch.Tensor, straight_through: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Likelihoods of the noise-relaxed latent. g_s decodes that latent, or with
        `straight_through` the rounded one the deployed coder sends (gradients pass unchanged):
        the decoder then trains on exactly what it will see, the rate still on the relaxation."""
        z_tilde, likelihoods = self.entropy_bottleneck(z)
        if straight_through:
            medians = self.entropy_bottleneck._get_medians()
            z_tilde = z + (torch.round(z - medians) + medians - z).detach()
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
    def rounded(self, z: torch.Tensor) -> torch.Tensor:
        """g_a's latent z as decompress_latent returns it from the bitstream of z, without coding:
        for fitting and checking decoders of this encoder."""
        eb = self.entropy_bottleneck
        return eb.quantize(z, "dequantize", eb._get_medians())

    @torch.no_grad()
    def decompress_latent(self, strings: list[bytes], latent_shape: tuple[int, ...],
                          max_abs_latent: float | None = None) -> torch.Tensor:
        """Edge: bitstreams -> the rounded latent z_hat (what every decoder of this encoder reads)."""
        if not self.has_tables():
            raise RuntimeError("entropy tables are missing: load a trained checkpoint")
        z_hat = self.entropy_bottleneck.decompress(strings, tuple(latent_shape[-2:]))
        if max_abs_latent is not None and not bool(z_hat.abs().le(max_abs_latent).all()):
            raise ValueError(f"decoded latent outside +-{max_abs_latent}: not a stream of this encoder")
        return z_hat

    @torch.no_grad()
    def decompress(self, strings: list[bytes], latent_shape: tuple[int, ...],
                   max_abs_latent: float | None = None) -> torch.Tensor:
        """Edge: bitstreams -> reconstructed shallow features h_tilde (N,C_h,h,w)."""
        return self.g_s(self.decompress_latent(strings, latent_shape, max_abs_latent))
