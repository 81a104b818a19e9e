"""Decoders for a shared encoder (FrankenSplit's decoder blueprints per archetype, paper 5.3/6.4):
one robot-side encoder and its prior (a bottleneck checkpoint), and, per further edge model, a
decoder g_s that maps the encoder's rounded latent to that model's features at its injection point.

Only the decoder is trained, against the frozen encoder, so the payload's bytes do not change and
one payload per frame serves every model. A decoder names the encoder it was fitted to by the
encoder checkpoint's hash; loading it next to another encoder is refused (`SharedDecoderMismatch`).

The decoder: a 1x1 linear map (started as the least-squares fit of the target features from the
latent, classical and exact up to what the latent lacks), plus a GDN branch whose last layer starts
at zero, then resampled to the target grid (the two models' crops cover nearly the same part of the
frame: Lite0 0.875, Lite2 0.89 of the short side)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from compressai.layers import GDN
from torch import nn

from fsplit_ros.hashing import state_dict_hash

FORMAT = "fsplit-shared-decoder/1"


class SharedDecoderMismatch(ValueError):
    """A decoder fitted to another encoder (or another model) than the one it is loaded with."""


@dataclass(frozen=True)
class SharedDecoderConfig:
    encoder_hash: str        # the shared bottleneck checkpoint (its hash) whose latent this decodes
    encoder_backbone: str    # the backbone that encoder belongs to (its layers run on the robot)
    latent_channels: int
    latent_side: int         # the latent grid at the encoder's input size
    backbone: str            # the edge model this decoder feeds
    injection_split: int     # split index of that model whose output it reconstructs
    target_channels: int
    target_side: int
    width: int = 192

    def to_dict(self) -> dict:
        return asdict(self)


class SharedDecoder(nn.Module):
    def __init__(self, config: SharedDecoderConfig):
        super().__init__()
        self.config = config
        c, w, t = config.latent_channels, config.width, config.target_channels
        self.linear = nn.Conv2d(c, t, 1)
        self.branch = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), GDN(w, inverse=True),
                                    nn.Conv2d(w, w, 3, padding=1), GDN(w, inverse=True),
                                    nn.Conv2d(w, t, 3, padding=1))
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        side = self.config.target_side
        out = self.linear(latent) + self.branch(latent)
        if out.shape[-1] != side:
            out = nn.functional.interpolate(out, size=(side, side), mode="bilinear", align_corners=False)
        return out

    @torch.no_grad()
    def fit_linear(self, latents: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> float:
        """Start the linear map as the least-squares fit of the targets from the latent (resampling
        is linear and commutes with a 1x1 map, so the latent is resampled to the target grid and
        fitted per position). Returns the relative residual on these pairs."""
        side = self.config.target_side
        x = nn.functional.interpolate(latents.float(), size=(side, side), mode="bilinear", align_corners=False)
        x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double()
        y = targets.float().permute(0, 2, 3, 1).reshape(-1, targets.shape[1]).double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
        w = torch.linalg.solve(gram, xc.T @ yc)                      # (C, T)
        self.linear.weight.copy_(w.T.reshape(self.linear.weight.shape).float())
        self.linear.bias.copy_((y_mean - x_mean @ w).float())
        return float((yc - xc @ w).pow(2).mean() / yc.pow(2).mean())


def decoder_hash(model: SharedDecoder) -> str:
    return state_dict_hash(model.state_dict(), FORMAT, repr(sorted(model.config.to_dict().items())))


def save_shared_decoder(model: SharedDecoder, path: str | Path, metadata: dict | None = None) -> str:
    """Writes the checkpoint; returns its hash."""
    digest = decoder_hash(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(),
                "hash": digest, "metadata": metadata or {}}, path)
    return digest


def load_shared_decoder(path: str | Path, encoder_hash: str | None = None
                        ) -> tuple[SharedDecoder, dict]:
    """A decoder checkpoint; with `encoder_hash`, refused unless it was fitted to that encoder."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises several types for files that are not checkpoints
        raise SharedDecoderMismatch(f"{path} is not a readable decoder checkpoint: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SharedDecoderMismatch(f"{path} is not an {FORMAT} checkpoint (train one with "
                                    f"python -m fsplit_ros.training.shared_decoder)")
    config = SharedDecoderConfig(**blob["config"])
    if encoder_hash is not None and config.encoder_hash != encoder_hash:
        raise SharedDecoderMismatch(
            f"{path} decodes the latent of encoder {config.encoder_hash[:12]} ({config.encoder_backbone}), "
            f"but the robot's encoder is {encoder_hash[:12]}: fit a decoder to this encoder")
    model = SharedDecoder(config)
    model.load_state_dict(blob["state_dict"], strict=True)
    model.eval().requires_grad_(False)
    if decoder_hash(model) != blob["hash"]:
        raise SharedDecoderMismatch(f"{path}: its weights do not match the hash it records (corrupt file)")
    return model, {"hash": blob["hash"], "metadata": blob.get("metadata", {})}
