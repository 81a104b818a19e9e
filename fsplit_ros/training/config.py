"""Training configuration: one dataclass, loaded from YAML (config/train_*.yaml), overridable from
the command line. Unknown keys are errors, so a typo never silently trains with a default."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from fsplit_ros.bottleneck.network import DECODERS, ENCODERS, TRANSFORMS
from fsplit_ros.datasets.frames import (DEFAULT_FRAMES_PER_VIDEO, DEFAULT_HELDOUT_EVERY,
                                        DEFAULT_MAX_SHORT_SIDE)


@dataclass
class TrainConfig:
    # --- what is trained ------------------------------------------------------------------------
    backbone: str = "efficientnet_lite0"        # fsplit backbone name (fsplit_ros.models.BACKBONES)
    weights: str | None = None                  # backbone weights file; None = offline default
    injection_split: int | None = None          # None = BACKBONES[backbone].injection_split
    target_channels: int | None = None          # None = channels of h at the injection split
    target_stride: int | None = None            # None = input size / spatial size of h
    encoder: str = "head"                       # "head" (backbone head + transform) or "image"
                                                # (the paper's pixel encoder): bottleneck/network.py
    transform_stride: int = 1                   # "head": 2 halves the latent grid (large maps)
    head_split: int | None = None               # "head": backbone units in g_a (None = up to the
                                                # injection split; fewer = a cheaper encoder)
    transform: str = "gdn"                      # "head": "gdn" (3x3), "light" (1x1-heavy) or
                                                # "linear" (one 1x1: a learned transform basis)
    decoder: str = "gdn"                        # g_s: "gdn", "residual" (linear inverse + GDN
                                                # branch) or "linear" (the inverse alone)
    pca_init_step: float | None = None          # "linear" transform, "residual" or "linear"
                                                # decoder: start as transform coding
                                                # of the head's features (principal components,
                                                # this quantization step; network.init_from_pca)
    straight_through: bool = False              # g_s trains on the rounded latent (the deployed
                                                # one; gradients straight through), not the noisy
    pca_init_views: int = 256                   # training views the principal components come from
    latent_channels: int = 48
    encoder_channels: int = 48                  # g_a width ("head": of the transform after it)
    decoder_channels: int = 96
    # --- objective: L = g1*MSE + g2*saliency-weighted MSE + beta * R, R in bits per input pixel --
    betas: list[float] = field(default_factory=lambda: [4.0, 16.0, 64.0])
    gammas: tuple[float, float] = (0.5, 0.5)    # (g1, g2), g1 + g2 = 1; g2 = 0 is plain FS-FP
    saliency: bool = True                       # False forces gammas = (1, 0)
    distill_weight: float = 1.0                 # weight of the head-distillation term D above
    kd_weight: float = 0.0                      # KL(full model || tail(h~)) of the class outputs
    kd_temperature: float = 1.0                 # (classifiers; nats, times T^2)
    feature_weight: float = 0.0                 # multi-stage: relative MSE at later tail stages
    feature_stages: list[int] | None = None     # split indices matched (None = each stage's end)
    rate_warmup_steps: int = 0                  # beta ramps up linearly over these steps: the
                                                # decoder learns before the rate squeezes the latent
    freeze_encoder: bool = False                # stage 2: g_a and the prior fixed (init_from's),
                                                # so the bytes stay; only g_s learns
    freeze_head: bool = False                   # "head": the copied backbone layers stay the
                                                # backbone's (only the transform, g_s and the prior
                                                # learn); with head_split unset g_a then starts from
                                                # the teacher's own h, computed once per batch
    # --- optimisation ---------------------------------------------------------------------------
    batch_size: int = 16
    steps: int = 20000
    lr: float = 1e-3
    prior_lr: float = 1e-2                      # the factorized prior's density parameters
    encoder_lr: float | None = None             # g_a's own learning rate (None = lr); 0 keeps g_a
                                                # as it starts (e.g. its principal components) while
                                                # g_s and the prior learn
    aux_lr: float = 1e-3
    lr_schedule: str = "cosine"                 # "cosine" (to lr * min_lr_ratio) or "constant"
    min_lr_ratio: float = 0.05
    warmup_steps: int = 0
    init_from: str | None = None                # bottleneck checkpoint every beta starts from
                                                # (warm start: a sweep fine-tunes one trained point)
    clip_grad_norm: float = 1.0                 # 0 disables clipping
    refine_quantiles: bool = True               # exact quantile bisection before the CDF tables
    seed: int = 0
    threads: int | None = None                  # torch CPU threads; None = torch's default
    workers: int = 1                            # DataLoader worker processes (0 = in-process)
    device: str = "cpu"                         # "cpu", "cuda", "cuda:1", ...
    # --- data -----------------------------------------------------------------------------------
    train_sources: list[str] | None = None      # videos / images / image folders; None = default corpus
    heldout_sources: list[str] | None = None    # None = family A; paths and/or "family:A" / "family:B"
    every_kth_frame: int = 1                    # training videos: every k-th frame ...
    frames_per_video: int = DEFAULT_FRAMES_PER_VIDEO   # ... at most this many, spread evenly
    heldout_every_kth_frame: int = DEFAULT_HELDOUT_EVERY
    max_short_side: int = DEFAULT_MAX_SHORT_SIDE  # cached frames are downscaled to this
    crop_scale: tuple[float, float] = (0.25, 1.0)   # random resized crop: fraction of frame area
    grayscale_p: float = 0.0                    # augmentation (datasets/frames.py Augmentation)
    overlay_p: float = 0.0                      # object cut-outs of the corpus pasted on views
    mixup_p: float = 0.0
    cutmix_p: float = 0.0
    train_patch: int | None = None              # losses on a random patch of each 224 sample (a
                                                # multiple of the target stride); None = whole input
    # --- bookkeeping ----------------------------------------------------------------------------
    out_dir: str | None = None                  # None = runs/train/<backbone>
    cache_dir: str | None = None                # saliency cache; None = ~/.cache/fsplit_ros/saliency
    log_every: int = 10
    checkpoint_every: int = 250                 # trainer state for --resume
    eval_every: int = 1000                      # held-out distortion/rate during training; 0 = end only
    eval_frames: int = 64                       # held-out frames used by the periodic evaluation

    def __post_init__(self):
        self.betas = [float(b) for b in ([self.betas] if isinstance(self.betas, (int, float))
                                         else self.betas)]
        self.gammas = tuple(float(g) for g in self.gammas)
        self.crop_scale = tuple(float(c) for c in self.crop_scale)
        for name in ("lr", "prior_lr", "aux_lr", "min_lr_ratio", "clip_grad_norm", "distill_weight",
                     "kd_weight", "kd_temperature", "feature_weight", "grayscale_p", "overlay_p",
                     "mixup_p", "cutmix_p"):
            setattr(self, name, float(getattr(self, name)))   # YAML reads "1e-3" as a string
        if not self.betas or any(b < 0 for b in self.betas):
            raise ValueError(f"betas must be a non-empty list of non-negative numbers, got {self.betas}")
        if len(self.gammas) != 2 or min(self.gammas) < 0 or abs(sum(self.gammas) - 1) > 1e-6:
            raise ValueError(f"gammas (g1, g2) must be two non-negative numbers with g1 + g2 = 1, "
                             f"got {self.gammas}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got '{self.encoder}'")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got '{self.transform}'")
        if min(self.distill_weight, self.kd_weight, self.feature_weight) < 0 or self.kd_temperature <= 0:
            raise ValueError("distill_weight, kd_weight and feature_weight must be >= 0 and "
                             "kd_temperature > 0")
        if self.freeze_encoder and not self.init_from:
            raise ValueError("freeze_encoder (stage 2) fine-tunes g_s of a trained bottleneck: set "
                             "init_from to its checkpoint")
        if self.encoder_lr is not None:
            self.encoder_lr = float(self.encoder_lr)
            if self.encoder_lr < 0:
                raise ValueError(f"encoder_lr must be >= 0 (or null), got {self.encoder_lr}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got '{self.decoder}'")
        if self.pca_init_step is not None and (self.transform != "linear" or self.decoder == "gdn"):
            raise ValueError("pca_init_step starts a 'linear' transform and a 'residual' or 'linear' "
                             "decoder: set transform: linear and decoder: residual, or pca_init_step: null")
        if self.freeze_head and self.encoder != "head":
            raise ValueError("freeze_head keeps the copied backbone layers of a 'head' encoder fixed: "
                             "set encoder: head, or freeze_head: false")
        if self.uses_saliency and max(self.overlay_p, self.mixup_p, self.cutmix_p) > 0:
            raise ValueError("saliency maps cannot follow overlays, mixup or cutmix: set saliency: "
                             "false (or --no-saliency), or overlay_p/mixup_p/cutmix_p to 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got '{self.lr_schedule}'")
        for name in ("batch_size", "steps", "log_every", "checkpoint_every", "every_kth_frame",
                     "heldout_every_kth_frame"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_patch is not None and (self.train_patch < 32 or self.train_patch % 8):
            raise ValueError(f"train_patch must be a multiple of 8 and >= 32 (or null), got {self.train_patch}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")

    @property
    def effective_gammas(self) -> tuple[float, float]:
        return self.gammas if self.saliency else (1.0, 0.0)

    @property
    def uses_saliency(self) -> bool:
        return self.effective_gammas[1] > 0

    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / "train" / self.backbone

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["gammas"], d["crop_scale"] = list(self.gammas), list(self.crop_scale)
        return d


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a YAML training config; `overrides` (not None) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist (examples: config/train_lite0.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values")
    unknown = sorted(set(data) - set(config_keys()))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys are {config_keys()}")
    unknown = sorted(set(overrides) - set(config_keys()))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid keys are {config_keys()}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**data)
