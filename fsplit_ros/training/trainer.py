"""FrankenSplit head distillation: train g_a, g_s and the factorized prior against a frozen backbone.

For a batch x:  h = head(x) (teacher, frozen)   h~, p = bottleneck(x) (noise-relaxed rounding)
    D    = g1 * mean((h - h~)^2) + g2 * mean(s * (h - h~)^2)      s: Grad-CAM map, mean 1 per frame
    R    = sum(-log2 p) / (N * H * W)                              bits per *input pixel* (bpp)
    loss = D + beta * R
beta's unit is therefore "feature MSE per bpp"; bits per image = R * H * W (50176 at 224x224).
The entropy model's quantiles are fitted by CompressAI's auxiliary loss with their own optimizer.

Runs are reproducible (fixed seeds; every augmentation is a pure function of (seed, sample
position)) and resumable (trainer state every `checkpoint_every` steps, global RNG included).
At the end the CDF tables are computed once on the CPU and the checkpoint is written with
save_bottleneck(); held-out frames are then coded for real to measure the rate point.
"""
from __future__ import annotations

import copy
import json
import math
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import compressai
import torch
from torch.utils.data import DataLoader, Sampler

from fsplit_ros.bottleneck import (BottleneckConfig, FrankenSplitBottleneck, load_bottleneck,
                                   save_bottleneck)
from fsplit_ros.bottleneck.network import init_from_pca
from fsplit_ros.evaluation.detection_fidelity import (EVALUATION_THRESHOLD, REFERENCE_THRESHOLD,
                                                     fidelity_map, map50_interval)
from fsplit_ros.datasets.frames import (Augmentation, Frame, FrameDataset, FrameSource,
                                        FrameSourceError, check_disjoint, default_corpus,
                                        described_name, file_digest, heldout_families,
                                        load_frames, load_overlays, overlay_paths,
                                        sources_from_paths)
from fsplit_ros.models import LoadedBackbone, load_backbone
from fsplit_ros.splitting import SplittableModel, map_stride
from fsplit_ros.training.config import TrainConfig
from fsplit_ros.tasks import TASKS
from fsplit_ros.training.saliency import cached_saliency

STATE_FORMAT = "fsplit-train-state/1"


class TrainingStateError(RuntimeError):
    """A run directory's saved state does not fit this run; the message says what to do."""


# --- setup --------------------------------------------------------------------------------------

def resolve_bottleneck_config(cfg: TrainConfig, backbone: LoadedBackbone) -> BottleneckConfig:
    """Bottleneck architecture for `cfg`: injection split and target shape default to what the
    backbone has there; explicit values in the config must agree with it."""
    split = cfg.injection_split if cfg.injection_split is not None else backbone.spec.injection_split
    size = backbone.input_size
    head = SplittableModel(backbone.model).head(split)
    with torch.no_grad():
        shape = tuple(head(torch.zeros(1, 3, size, size, device=_model_device(backbone))).shape)
    if len(shape) != 4 or shape[-1] == 0 or map_stride(size, shape[-1]) is None:
        raise ValueError(f"split {split} of {backbone.name} gives {shape}: FrankenSplit needs a "
                         f"convolutional feature map (N,C,H,W) at the injection point")
    channels, stride = shape[1], map_stride(size, shape[-1])
    head_split, head_channels, head_stride = cfg.head_split, None, None
    if head_split is not None and head_split != split:
        if not 0 < head_split < split:
            raise ValueError(f"head_split {head_split} must lie between 1 and the injection split {split}")
        with torch.no_grad():
            hshape = tuple(SplittableModel(backbone.model).head(head_split)(
                torch.zeros(1, 3, size, size, device=_model_device(backbone))).shape)
        if len(hshape) != 4 or map_stride(size, hshape[-1]) is None:
            raise ValueError(f"split {head_split} of {backbone.name} gives {hshape}: the encoder's head "
                             f"must end in a convolutional feature map")
        head_channels, head_stride = hshape[1], map_stride(size, hshape[-1])
    else:
        head_split = None
    if cfg.target_channels is not None and cfg.target_channels != channels:
        raise ValueError(f"target_channels={cfg.target_channels}, but split {split} of {backbone.name} "
                         f"has {channels} channels {shape}: fix the config or leave it unset")
    if cfg.target_stride is not None and cfg.target_stride != stride:
        raise ValueError(f"target_stride={cfg.target_stride}, but split {split} of {backbone.name} has "
                         f"stride {stride}: fix the config or leave it unset")
    return BottleneckConfig(backbone=backbone.name, injection_split=split, target_channels=channels,
                            target_stride=stride, input_size=size,
                            latent_channels=cfg.latent_channels, encoder_channels=cfg.encoder_channels,
                            decoder_channels=cfg.decoder_channels, encoder=cfg.encoder,
                            transform_stride=cfg.transform_stride, head_split=head_split,
                            head_channels=head_channels, head_stride=head_stride,
                            transform=cfg.transform, decoder=cfg.decoder,
                            backbone_head=cfg.freeze_head and cfg.encoder == "head")


def _model_device(backbone: LoadedBackbone) -> torch.device:
    return next(backbone.model.parameters()).device


@dataclass
class TrainingData:
    """Decoded frames (CPU, uint8) and their saliency maps, shared by every beta of a sweep."""
    train_sources: list[FrameSource]
    heldout_sources: list[FrameSource]
    train_frames: list[Frame]
    heldout_frames: list[Frame]
    saliency: list[torch.Tensor] | None = None
    saliency_cache: Path | None = None
    saliency_seconds: float = 0.0
    overlays: list = field(default_factory=list)     # RGBA object cut-outs (cfg.overlay_p)


def _heldout_from_config(cfg: TrainConfig) -> list[FrameSource]:
    """cfg.heldout_sources: paths, and/or "family:A" / "family:B" for a held-out family of
    fsplit_ros/datasets/frames.py (e.g. B when a warm start already trained on A's files)."""
    paths = [str(p) for p in cfg.heldout_sources if not str(p).startswith("family:")]
    out = (sources_from_paths(paths, cfg.heldout_every_kth_frame, cfg.frames_per_video) if paths else [])
    tokens = [str(p) for p in cfg.heldout_sources if str(p).startswith("family:")]
    families = heldout_families(cfg.heldout_every_kth_frame) if tokens else {}
    for token in tokens:
        name = token.split(":", 1)[1]
        if name not in families:
            raise FrameSourceError(f"heldout_sources: {token} is not a held-out family here (have "
                                   f"{sorted(families)}; B needs the corpus: fsplit-data)")
        out += families[name]
    return out


def init_from_train_sources(cfg: TrainConfig) -> list[str]:
    """The files cfg.init_from's checkpoint (and, recursively, its own start) was trained on."""
    if not cfg.init_from:
        return []
    _, info = load_bottleneck(cfg.init_from)
    return list(info["metadata"].get("train_sources", []))


def file_digests(sources: list[FrameSource], known: dict | None = None,
                 skip: set[str] = frozenset()) -> dict[str, list[str]]:
    """{file name: content digests} of `sources` (names repeat in the corpus), merged into `known`;
    sources named in `skip` get none."""
    out: dict[str, set[str]] = {name: set(digests) for name, digests in (known or {}).items()}
    for source in sources:
        if source.name not in skip:
            out.setdefault(source.name, set()).add(file_digest(source.path))
    return {name: sorted(digests) for name, digests in sorted(out.items())}


def train_file_digests(sources: list[FrameSource], cfg: TrainConfig) -> dict[str, list[str]]:
    """The training files' digests: lets fsplit-eval tell a same-named other file from the one
    trained on. A warm start's digests are merged; names its checkpoint trained on without digests
    get none, so they stay refused by name."""
    warm = load_bottleneck(cfg.init_from)[1]["metadata"] if cfg.init_from else {}
    known = warm.get("train_file_digests", {})
    undigested = {described_name(s) for s in warm.get("train_sources", [])} - set(known)
    return file_digests(sources, known, undigested)


def heldout_file_digests(sources: list[FrameSource]) -> dict[str, list[str]]:
    """The held-out files' digests: with train_file_digests they show, from the checkpoint alone,
    that a held-out file sharing a training file's name is another file."""
    return file_digests(sources)


def _check_init_from_never_saw(cfg: TrainConfig, heldout: list[FrameSource]) -> None:
    """A warm start from a checkpoint trained on this run's held-out files would report optimistic
    held-out numbers (and the profile's fidelity would carry them): refuse, saying what to do."""
    if not cfg.init_from:
        return
    from fsplit_ros.evaluation.rate_accuracy import TrainedOnHeldOut, check_not_trained_on
    _, info = load_bottleneck(cfg.init_from)
    try:
        check_not_trained_on(Path(cfg.init_from), info["metadata"], [s.name for s in heldout],
                             [s.path for s in heldout])
    except TrainedOnHeldOut as exc:
        raise FrameSourceError(f"init_from: {exc}; as this run's held-out set, set heldout_sources to "
                               f"files it never saw, e.g. [family:B] (the ViSP camera; fsplit-data)") from None


def prepare_data(cfg: TrainConfig, backbone: LoadedBackbone, injection_split: int,
                 progress: bool = True) -> TrainingData:
    """Sources (the config's or the default corpus), decoded frames, and (if used) saliency."""
    if cfg.train_sources is None or cfg.heldout_sources is None:
        default_train, default_heldout = default_corpus(cfg.every_kth_frame, cfg.frames_per_video,
                                                        cfg.heldout_every_kth_frame)
    train = (sources_from_paths(cfg.train_sources, cfg.every_kth_frame, cfg.frames_per_video)
             if cfg.train_sources is not None else default_train)
    heldout = (_heldout_from_config(cfg) if cfg.heldout_sources is not None else default_heldout)
    check_disjoint(train, heldout)
    _check_init_from_never_saw(cfg, heldout)
    train_frames = load_frames(train, cfg.max_short_side, progress)
    heldout_frames = load_frames(heldout, cfg.max_short_side, progress) if heldout else []
    heldout_files = {s.file_key for s in heldout}
    leaked = [f.source for f in train_frames if f.source in heldout_files]
    if leaked:   # cannot happen after check_disjoint; a guard against future source kinds
        raise RuntimeError(f"held-out file {leaked[0]} produced training frames")
    data = TrainingData(train, heldout, train_frames, heldout_frames)
    if cfg.overlay_p > 0:
        data.overlays = load_overlays(overlay_paths())
        if not data.overlays:
            raise FrameSourceError("overlay_p > 0 needs the corpus's object cut-outs: install them "
                                   "with fsplit-data, or set overlay_p: 0")
    if cfg.uses_saliency:
        t0 = time.perf_counter()
        data.saliency, data.saliency_cache, hit = cached_saliency(
            train_frames, backbone, injection_split, cfg.cache_dir, device=cfg.device, progress=progress)
        data.saliency_seconds = time.perf_counter() - t0
        if progress:
            print(f"saliency maps: {'cached' if hit else 'computed'} {data.saliency_cache} "
                  f"({data.saliency_seconds:.1f} s)", file=sys.stderr)
    return data


class StepBatches(Sampler):
    """Batches of (frame index, augmentation seed) for steps [start, stop).

    The sample stream is a concatenation of per-epoch permutations seeded by (seed, epoch); batch s
    takes stream positions [s*B, (s+1)*B). Batch s is the same whether or not the run was resumed."""

    def __init__(self, num_frames: int, batch_size: int, seed: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.start, self.stop = num_frames, batch_size, seed, start, stop
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        out = []
        for position in range(step * self.batch, (step + 1) * self.batch):
            epoch, k = divmod(position, self.n)
            sample_seed = (self.seed * 0x9E3779B97F4A7C15 + position) % (2 ** 63)
            out.append((int(self._permutation(epoch)[k]), sample_seed))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.batch_for_step(step)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at `step` (a pure function of the step, so resuming needs no
    scheduler state; resuming with a larger --steps stretches the remaining cosine)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def split_parameters(model: torch.nn.Module) -> tuple[list, list, list]:
    """(networks, prior, aux): g_a/g_s; the factorized prior's density parameters (their own learning
    rate: the prior must follow the latents quickly, or the rate term lags for thousands of steps);
    the entropy bottleneck's quantiles, fitted by the aux loss only (CompressAI)."""
    networks, prior, aux = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("quantiles"):
            aux.append(p)
        elif name.startswith("entropy_bottleneck."):
            prior.append(p)
        else:
            networks.append(p)
    return networks, prior, aux


def beta_tag(beta: float) -> str:
    return f"beta{beta:g}"


def detection_kd(teacher: torch.Tensor, student: torch.Tensor, config) -> torch.Tensor:
    """KD for a GFL detector's raw outputs (B, cells, classes + 4 * (reg_max + 1)): the binary KL
    of every class score (summed over classes, mean over cells), plus the KL of the four box-side
    distributions weighted by the teacher's best class score in the cell (boxes only matter where
    the teacher sees something). Teacher scores are the targets; both are post-sigmoid."""
    c, bins = config.num_classes, config.reg_max + 1
    eps = 1e-6
    p_t = teacher[..., :c].clamp(eps, 1 - eps)
    p_s = student[..., :c].clamp(eps, 1 - eps)
    cls = (p_t * (p_t.log() - p_s.log()) + (1 - p_t) * ((1 - p_t).log() - (1 - p_s).log())).sum(-1).mean()
    shape = (*teacher.shape[:-1], 4, bins)
    log_t = teacher[..., c:].reshape(shape).log_softmax(-1)
    log_s = student[..., c:].reshape(shape).log_softmax(-1)
    box = (log_t.exp() * (log_t - log_s)).sum(-1).sum(-1)                  # (B, cells)
    weight = p_t.amax(-1)
    return cls + (weight * box).sum() / weight.sum().clamp_min(eps)


# --- the trainer --------------------------------------------------------------------------------

@dataclass
class TrainResult:
    beta: float
    checkpoint: Path
    log: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    model: FrankenSplitBottleneck | None = None


class BottleneckTrainer:
    """Trains one bottleneck (one beta). Files under cfg.output_dir():
    <backbone>_bottleneck_<beta>.pt (the checkpoint), <beta>/state.pt (for --resume),
    <beta>/log.jsonl (training log) and summary.json (one rate point per beta)."""

    def __init__(self, cfg: TrainConfig, beta: float, backbone: LoadedBackbone, data: TrainingData,
                 bottleneck_config: BottleneckConfig | None = None, command: str | None = None,
                 progress: bool = True):
        self.cfg, self.beta, self.backbone, self.data = cfg, float(beta), backbone, data
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device '{cfg.device}' requested but CUDA is not available: use "
                               f"device: cpu (or --device cpu)")
        self.bcfg = bottleneck_config or resolve_bottleneck_config(cfg, backbone)
        self.command = command if command is not None else shlex.join(sys.argv)
        self.progress = progress
        self.out_dir = cfg.output_dir()
        self.run_dir = self.out_dir / beta_tag(self.beta)
        self.state_path = self.run_dir / "state.pt"
        self.checkpoint_path = self.out_dir / f"{backbone.name}_bottleneck_{beta_tag(self.beta)}.pt"
        # A private copy of the frozen backbone: moving it to the device and to channels-last
        # (7x faster depthwise convolutions on CPU) must not change the caller's model.
        frozen = copy.deepcopy(backbone.model).eval().requires_grad_(False)
        split = SplittableModel(frozen.to(self.device, memory_format=torch.channels_last))
        self.teacher = split.head(self.bcfg.injection_split)
        self.tail = split.tail(self.bcfg.injection_split)
        self.encoder_head = split.head(self.bcfg.encoder_split)
        # a lent (frozen) head up to the injection point computes exactly the teacher's h
        self.shares_teacher_head = (self.bcfg.backbone_head
                                    and self.bcfg.encoder_split == self.bcfg.injection_split)
        self.stages = self._feature_stages(split) if cfg.feature_weight > 0 else []
        if cfg.train_patch and cfg.train_patch % self.bcfg.latent_stride:
            raise ValueError(f"train_patch {cfg.train_patch} must be a multiple of the latent stride "
                             f"{self.bcfg.latent_stride}")
        self.g1, self.g2 = cfg.effective_gammas
        if self.g2 > 0 and data.saliency is None:
            raise ValueError("g2 > 0 needs saliency maps: prepare the data with saliency enabled")
        mean, std = backbone.data_config["mean"], backbone.data_config["std"]
        self.train_set = FrameDataset(data.train_frames, mean, std, self.bcfg.input_size, augment=True,
                                      saliency=data.saliency if self.g2 > 0 else None,
                                      saliency_size=self.bcfg.target_side,
                                      augmentation=Augmentation(
                                          crop_scale=cfg.crop_scale, grayscale_p=cfg.grayscale_p,
                                          overlay_p=cfg.overlay_p, mixup_p=cfg.mixup_p,
                                          cutmix_p=cfg.cutmix_p),
                                      channel_order=backbone.channel_order, overlays=data.overlays)
        crop_pct = float(backbone.data_config.get("crop_pct", 0.875))
        self.heldout_set = FrameDataset(data.heldout_frames, mean, std, self.bcfg.input_size,
                                        augment=False, crop_pct=crop_pct,
                                        channel_order=backbone.channel_order)

    def _feature_stages(self, split: SplittableModel) -> list[int]:
        """Tail positions (split indices after the injection point) whose outputs are matched:
        cfg.feature_stages, or the end of every backbone stage (the last unit of each 'blocks.s'
        group, and the last feature map before pooling)."""
        names = split.unit_names()
        first = self.bcfg.injection_split
        if self.cfg.feature_stages is not None:
            bad = [i for i in self.cfg.feature_stages if not first < i < len(names)]
            if bad:
                raise ValueError(f"feature_stages {bad} must lie after the injection split {first} "
                                 f"and before {len(names)}")
            return sorted(set(self.cfg.feature_stages))
        stages = []
        for i in range(first + 1, len(names)):
            group, next_group = names[i - 1].rsplit(".", 1)[0], names[i].rsplit(".", 1)[0]
            if group != next_group and i > first + 1:
                stages.append(i)
        x = torch.zeros(1, 3, self.bcfg.input_size, self.bcfg.input_size, device=self.device)
        with torch.no_grad():
            last_map = None
            for i, (_, unit) in enumerate(split.units, start=1):
                x = unit(x)
                if x.dim() == 4 and x.shape[-1] > 1:
                    last_map = i
        return sorted({s for s in stages if s <= (last_map or 0)} | ({last_map} if last_map and last_map > first else set()))

    def tail_outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The frozen tail on h: (outputs, [features at self.stages])."""
        feats = []
        position = self.bcfg.injection_split
        for unit in self.tail:
            h = unit(h)
            position += 1
            if position in self.stages:
                feats.append(h)
        return h, feats

    # -- state -----------------------------------------------------------------------------------

    def _new_model(self) -> FrankenSplitBottleneck:
        """The starting point: cfg.init_from's weights (warm start), else a seeded initialisation
        (every beta of a sweep starts from the same one; a "head" encoder from the teacher's head)."""
        torch.manual_seed(self.cfg.seed)
        head = (copy.deepcopy(self.encoder_head).to("cpu", memory_format=torch.contiguous_format)
                .requires_grad_(True) if self.bcfg.encoder == "head" and not self.bcfg.backbone_head
                else None)
        model = FrankenSplitBottleneck(self.bcfg, head=head)
        if self.bcfg.backbone_head:   # lent, frozen: the teacher's own layers
            model.attach_backbone_head(self.encoder_head)
        if self.cfg.init_from:
            warm, info = self._load(self.cfg.init_from)
            if info["config"] != self.bcfg.to_dict():
                raise TrainingStateError(
                    f"init_from {self.cfg.init_from} is a bottleneck for {info['config']}, but this run "
                    f"trains {self.bcfg.to_dict()}: start from a checkpoint of the same architecture")
            model = warm.requires_grad_(True)
        elif self.cfg.pca_init_step is not None:
            init_from_pca(model, self._head_features(self.cfg.pca_init_views), self.cfg.pca_init_step)
        if self.cfg.encoder_lr == 0:  # g_a stays as it starts; the prior still learns
            model.g_a.requires_grad_(False)
        if self.cfg.freeze_encoder:   # stage 2: the bytes of every frame stay those of init_from
            model.g_a.requires_grad_(False)
            model.entropy_bottleneck.requires_grad_(False)
        return model.to(self.device, memory_format=torch.channels_last)

    def _load(self, path) -> tuple[FrankenSplitBottleneck, dict]:
        """load_bottleneck, lending a backbone_head checkpoint the teacher's layers."""
        model, info = load_bottleneck(path)
        if model.config.backbone_head:
            model.attach_backbone_head(self.encoder_head)
        return model, info

    @torch.no_grad()
    def _head_features(self, views: int) -> torch.Tensor:
        """The encoder head's output on `views` augmented training views (fixed seeds: the same
        views every run), for the principal-component start."""
        sampler = StepBatches(len(self.train_set), self.cfg.batch_size, self.cfg.seed + 17, 0,
                              math.ceil(views / self.cfg.batch_size))
        feats = []
        for batch in sampler:
            x = torch.stack([self.train_set[key]["image"] for key in batch]).to(self.device)
            feats.append(self.encoder_head(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(feats)[:views]

    def _save_state(self, model, opt, aux_opt, step, log, evals, seconds):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {"format": STATE_FORMAT, "step": step, "beta": self.beta,
                 "bottleneck_config": self.bcfg.to_dict(), "config": self.cfg.to_dict(),
                 "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "aux_optimizer": aux_opt.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                 "train_sources": self._train_source_names(), "log": log, "evals": evals,
                 "seconds": seconds}
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)
        with open(self.run_dir / "log.jsonl", "w") as fh:
            for row in log + evals:
                fh.write(json.dumps(row) + "\n")

    def _train_source_names(self) -> list[str]:
        return [s.describe() for s in self.data.train_sources]

    def _load_state(self, model, opt, aux_opt) -> tuple[int, list, list, float]:
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise TrainingStateError(f"{self.state_path} is not an fsplit training state")
        if state["bottleneck_config"] != self.bcfg.to_dict() or state["beta"] != self.beta:
            raise TrainingStateError(
                f"{self.state_path} belongs to another run (beta {state['beta']}, "
                f"{state['bottleneck_config']}): resume with the same config, or use another --out")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            aux_opt.load_state_dict(state["aux_optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingStateError(
                f"{self.state_path} was written by another version of the trainer ({exc}): start "
                f"afresh with another --out, or warm-start from its checkpoint with --init-from") from exc
        if state.get("train_sources") != self._train_source_names():
            warnings.warn(f"resuming {self.state_path} with different training sources than it was "
                          f"started with", stacklevel=3)
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        return state["step"], state["log"], state["evals"], state["seconds"]

    # -- training --------------------------------------------------------------------------------

    def patch_box(self, step: int) -> tuple[int, int, int] | None:
        """(top, left, size) of the training patch at `step`, on the latent grid's lattice (as
        deployed, where the grid starts at the input's corner), or None for the full input. A pure
        function of (seed, step), so resumed runs cut the same patches."""
        size, full, stride = self.cfg.train_patch, self.bcfg.input_size, self.bcfg.latent_stride
        if not size or size >= full:
            return None
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + step)
        top, left = (int(v) * stride for v in torch.randint(0, (full - size) // stride + 1, (2,), generator=g))
        return top, left, size

    def rate_weight(self, step: int | None) -> float:
        """beta at `step`: ramped over cfg.rate_warmup_steps (a pure function of the step, so a
        resumed run sees the same); 0 in stage 2, where the rate cannot change."""
        if self.cfg.freeze_encoder:
            return 0.0
        if self.cfg.rate_warmup_steps and step is not None:
            return self.beta * min(1.0, (step + 1) / self.cfg.rate_warmup_steps)
        return self.beta

    def losses(self, model, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; with cfg.train_patch (and a step) on a random patch of it:
        every network here is fully convolutional, and a 112 patch costs a quarter of 224."""
        x = batch["image"]
        box = self.patch_box(step) if step is not None else None
        if box:
            top, left, size = box
            stride = self.bcfg.target_stride
            x = x[:, :, top:top + size, left:left + size]
            if "saliency" in batch:
                batch = {**batch, "saliency": batch["saliency"][:, top // stride:(top + size) // stride,
                                                                left // stride:(left + size) // stride]}
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        cfg = self.cfg
        with torch.no_grad():
            h = self.teacher(x)
            if cfg.kd_weight > 0 or cfg.feature_weight > 0:
                teacher_out, teacher_feats = self.tail_outputs(h)
        if self.shares_teacher_head:
            h_tilde, likelihoods = model.forward_from_head(h, cfg.straight_through)
        else:
            h_tilde, likelihoods = model(x, cfg.straight_through)
        sq = (h - h_tilde).pow(2)
        mse = sq.mean()
        out = {"mse": mse}
        extra = torch.zeros((), device=self.device)
        if cfg.kd_weight > 0 or cfg.feature_weight > 0:
            student_out, student_feats = self.tail_outputs(h_tilde)
            if cfg.kd_weight > 0:
                out.update(KD_TERMS[self.backbone.task.name](teacher_out, student_out, self.backbone,
                                                             cfg.kd_temperature))
                extra = extra + cfg.kd_weight * out["kd"]
            if cfg.feature_weight > 0:
                # relative error per stage: each stage counts alike whatever its feature scale
                rel = [(f - g).pow(2).mean() / g.pow(2).mean().clamp_min(1e-8)
                       for f, g in zip(student_feats, teacher_feats)]
                out["feature_rel_mse"] = torch.stack(rel).mean()
                extra = extra + cfg.feature_weight * out["feature_rel_mse"]
        distortion = self.g1 * mse
        if self.g2 > 0:
            s = batch["saliency"].to(self.device, non_blocking=True).unsqueeze(1)   # (N,1,h,w)
            out["saliency_mse"] = (s * sq).mean()
            distortion = distortion + self.g2 * out["saliency_mse"]
        n, _, height, width = x.shape
        bits = -torch.log2(likelihoods).sum() / n
        out.update(distortion=distortion, bits_per_image=bits, bpp=bits / (height * width))
        out["loss"] = cfg.distill_weight * distortion + extra + self.rate_weight(step) * out["bpp"]
        return out

    def train(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        model = self._new_model().train()
        network_params, prior_params, aux_params = split_parameters(model)
        main_params = network_params + prior_params
        groups = [{"params": network_params, "base_lr": cfg.lr},
                  {"params": prior_params, "base_lr": cfg.prior_lr}]
        if cfg.encoder_lr:            # g_a in a group of its own
            encoder = {id(p) for p in model.g_a.parameters()}
            groups[0]["params"] = [p for p in network_params if id(p) not in encoder]
            groups.append({"params": [p for p in network_params if id(p) in encoder],
                           "base_lr": cfg.encoder_lr})
        opt = torch.optim.Adam(groups, lr=cfg.lr)
        # stage 2 has no prior or quantiles to fit: a placeholder keeps the state layout
        aux_opt = torch.optim.Adam(aux_params or [torch.zeros(1, requires_grad=True)], lr=cfg.aux_lr)
        step, log, evals, seconds = 0, [], [], 0.0
        torch.manual_seed(cfg.seed + 1)   # noise of the rounding relaxation
        if self.state_path.is_file():
            if not resume:
                raise TrainingStateError(
                    f"{self.state_path} exists from an earlier run: pass --resume to continue it "
                    f"(it trains up to --steps), or choose another --out")
            step, log, evals, seconds = self._load_state(model, opt, aux_opt)
            if step >= cfg.steps and self.checkpoint_path.is_file():
                self._say(f"beta {self.beta:g}: already trained to step {step} -> {self.checkpoint_path}")
                model, info = self._load(self.checkpoint_path)
                return TrainResult(self.beta, self.checkpoint_path, log, evals, info["metadata"], model)
            self._say(f"beta {self.beta:g}: resuming at step {step} of {cfg.steps}")
        elif resume:
            self._say(f"beta {self.beta:g}: nothing to resume in {self.run_dir}; starting fresh")

        sampler = StepBatches(len(self.train_set), cfg.batch_size, cfg.seed, step, cfg.steps)
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=cfg.workers,
                            pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if cfg.workers else None,
                            # its own generator: creating the loader must not consume the global
                            # RNG (the rounding noise), or a resumed run would differ
                            generator=torch.Generator().manual_seed(cfg.seed))
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=step, desc=f"beta {self.beta:g}", unit="step",
                       dynamic_ncols=True)
        sums: dict[str, float] = {}
        count = 0
        t_start = time.perf_counter() - seconds
        for batch in loader:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(cfg, step)
            terms = self.losses(model, batch, step)
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(f"loss is {terms['loss'].item()} at step {step}: lower lr "
                                         f"or check the data")
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_grad_norm)
            opt.step()
            aux = model.aux_loss()
            if aux_params:
                aux_opt.zero_grad(set_to_none=True)
                aux.backward()
                aux_opt.step()
            step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["aux_loss"] = sums.get("aux_loss", 0.0) + float(aux.detach())
            count += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, **{k: v / count for k, v in sums.items()},
                       "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t_start}
                log.append(row)
                sums, count = {}, 0
                if bar:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", mse=f"{row['mse']:.4f}",
                                    bits=f"{row['bits_per_image']:.0f}",
                                    **({"agree": f"{row['top1_agreement']:.2f}"} if "top1_agreement" in row else {}))
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and self.data.heldout_frames:
                evals.append({"step": step, **self.evaluate(model, limit=cfg.eval_frames)})
                model.train()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                self._save_state(model, opt, aux_opt, step, log, evals, time.perf_counter() - t_start)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        seconds = time.perf_counter() - t_start
        if step < cfg.steps:
            raise RuntimeError(f"the data loader stopped at step {step} of {cfg.steps}")
        return self._finish(model, step, log, evals, seconds)

    def _finish(self, model, step, log, evals, seconds) -> TrainResult:
        """Tables on the CPU, checkpoint, then the real rate point on the held-out frames."""
        # The deployed layout: a model loaded from the checkpoint must compute the very same z.
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        if self.bcfg.backbone_head:   # the deployed layout: the backbone's own layers, on the CPU
            model.attach_backbone_head(SplittableModel(self.backbone.model).head(self.bcfg.encoder_split))
        if not self.cfg.freeze_encoder:   # stage 2 keeps init_from's tables: the same bytes
            if self.cfg.refine_quantiles:
                model.entropy_bottleneck.update(force=True, update_quantiles=True)
            model.update_tables()
        model.requires_grad_(False)
        final_eval = self.evaluate(model, real_coding=True) if self.data.heldout_frames else {}
        metadata = self.metadata(step, seconds, log, final_eval)
        save_bottleneck(model, self.checkpoint_path, metadata)
        self._update_summary(metadata)
        fidelity = (f"fidelity mAP@0.5 {final_eval['fidelity_map50']:.2f}" if "fidelity_map50" in final_eval
                    else f"top-1 agreement {final_eval.get('top1_agreement', float('nan')):.2f}")
        self._say(f"beta {self.beta:g}: {step} steps in {seconds:.0f} s -> {self.checkpoint_path}"
                  + (f"  held-out: {final_eval['bytes_per_image']:.0f} B/image, mse "
                     f"{final_eval['mse']:.4f}, {fidelity}" if final_eval else ""))
        return TrainResult(self.beta, self.checkpoint_path, log, evals, metadata, model)

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: FrankenSplitBottleneck, limit: int | None = None,
                 real_coding: bool = False, batch_size: int = 16) -> dict:
        """Held-out centre crops (the deployed preprocessing of a classifier; a detector sees the
        largest central square). Rate: estimated from the prior at hard rounding, and with
        real_coding the actual rANS bytes; distortion: feature MSE of the decoded h~.
        Classifier: top1_agreement, how often tail(h~) predicts the backbone's own class, and
        kl_divergence, KL(backbone || tail(h~)) of the class distributions in nats (smoother).
        Detector: fidelity_map50 / fidelity_map50_95, tail(h~)'s detections scored against tail(h)'s
        (evaluation/detection_fidelity.py; fsplit-eval measures the deployed letterbox path)."""
        model.eval()
        device = next(model.parameters()).device
        teacher = self.teacher.to(device)
        tail = self.tail.to(device)
        score = HELDOUT_SCORES[self.backbone.task.name](self.backbone)
        n = len(self.heldout_set)
        indices = list(range(n)) if not limit or limit >= n else \
            torch.linspace(0, n - 1, limit).round().long().tolist()
        totals = {"mse": 0.0, "bits_estimated": 0.0, "bytes": 0.0}
        for k in range(0, len(indices), batch_size):
            x = torch.stack([self.heldout_set[i]["image"] for i in indices[k:k + batch_size]]).to(device)
            h = teacher(x)
            if real_coding:
                strings, latent_shape = model.compress(x)
                h_tilde = model.decompress(strings, latent_shape)
                totals["bytes"] += sum(len(s) for s in strings)
                _, likelihoods = model(x)
            else:
                h_tilde, likelihoods = model(x)
            totals["bits_estimated"] += float(-torch.log2(likelihoods).sum())
            totals["mse"] += float((h - h_tilde).pow(2).mean(dim=(1, 2, 3)).sum())
            score.add(tail(h), tail(h_tilde))
        m = len(indices)
        out = {"frames": m, "mse": totals["mse"] / m, "bits_estimated": totals["bits_estimated"] / m,
               **score.result(m)}
        if real_coding:
            out["bytes_per_image"] = totals["bytes"] / m
            out["bits_per_image"] = 8 * totals["bytes"] / m
        return out

    # -- records ---------------------------------------------------------------------------------

    def metadata(self, step: int, seconds: float, log: list[dict], final_eval: dict) -> dict:
        cfg, data = self.cfg, self.data
        last = log[-1] if log else {}
        metadata = {
            "backbone": self.backbone.name, "backbone_weights_hash": self.backbone.weights_hash,
            "injection_split": self.bcfg.injection_split, "beta": self.beta,
            "beta_unit": "feature MSE per bit per input pixel (R in bpp)",
            "gammas": list(self.cfg.effective_gammas), "saliency": self.g2 > 0,
            "steps": step, "seconds": round(seconds, 1), "batch_size": cfg.batch_size, "lr": cfg.lr,
            "prior_lr": cfg.prior_lr, "encoder_lr": cfg.encoder_lr, "aux_lr": cfg.aux_lr,
            "encoder": self.bcfg.encoder,
            "lr_schedule": cfg.lr_schedule, "train_patch": cfg.train_patch,
            "seed": cfg.seed, "device": cfg.device,
            "objective": {"distill_weight": cfg.distill_weight, "kd_weight": cfg.kd_weight,
                          "kd_temperature": cfg.kd_temperature, "feature_weight": cfg.feature_weight,
                          "feature_stages": self.stages, "freeze_encoder": cfg.freeze_encoder,
                          "freeze_head": cfg.freeze_head,
                          "rate_warmup_steps": cfg.rate_warmup_steps},
            "augmentation": {"crop_scale": list(cfg.crop_scale), "grayscale_p": cfg.grayscale_p,
                             "overlay_p": cfg.overlay_p, "overlays": len(data.overlays),
                             "mixup_p": cfg.mixup_p, "cutmix_p": cfg.cutmix_p},
            "head_split": self.bcfg.head_split, "transform": self.bcfg.transform,
            "decoder": self.bcfg.decoder, "pca_init_step": cfg.pca_init_step,
            "straight_through": cfg.straight_through,
            "init_from": self._init_from_record(),
            # a warm start's own training files count as trained on (fsplit-eval refuses them)
            "train_sources": list(dict.fromkeys([s.describe() for s in data.train_sources]
                                                + init_from_train_sources(cfg))),
            "train_file_digests": train_file_digests(data.train_sources, cfg),
            "heldout_file_digests": heldout_file_digests(data.heldout_sources),
            "heldout_sources": [s.describe() for s in data.heldout_sources],
            "frames": {"train": len(data.train_frames), "heldout": len(data.heldout_frames)},
            "final_train": {k: last[k] for k in ("loss", "mse", "bpp", "bits_per_image") if k in last},
            "heldout": final_eval,
            "torch": str(torch.__version__), "compressai": str(compressai.__version__),
            "command": self.command,
        }
        # Plain JSON types only: load_bottleneck reads with weights_only=True, which refuses any
        # other class (torch.__version__ alone is a TorchVersion, not a str).
        return json.loads(json.dumps(metadata, default=str))

    def _init_from_record(self) -> dict | None:
        """Which checkpoint (file name, hash, its own steps) a warm-started run began from."""
        if not self.cfg.init_from:
            return None
        _, info = load_bottleneck(self.cfg.init_from)
        return {"file": Path(self.cfg.init_from).name, "hash": info["hash"],
                "beta": info["metadata"].get("beta"), "steps": info["metadata"].get("steps")}

    def _update_summary(self, metadata: dict) -> None:
        path = self.out_dir / "summary.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        rows = [r for r in rows if r.get("beta") != self.beta]
        rows.append({"beta": self.beta, "checkpoint": self.checkpoint_path.name,
                     "steps": metadata["steps"], "gammas": metadata["gammas"],
                     **{f"heldout_{k}": v for k, v in metadata["heldout"].items()}})
        path.write_text(json.dumps(sorted(rows, key=lambda r: r["beta"]), indent=2) + "\n")

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr)


# --- what differs per task (fsplit_ros/tasks.py): the KD term and the held-out score ----------------

def classification_kd(teacher_out: torch.Tensor, student_out: torch.Tensor, backbone, temperature: float) -> dict:
    """KL(backbone || tail(h~)) of the class distributions at `temperature` (x T^2), and the batch's
    top-1 agreement (logged)."""
    t = temperature
    log_p, log_q = (teacher_out / t).log_softmax(1), (student_out / t).log_softmax(1)
    return {"kd": (log_p.exp() * (log_p - log_q)).sum(1).mean() * t * t,
            "top1_agreement": (student_out.argmax(1) == teacher_out.argmax(1)).float().mean()}


def detector_kd(teacher_out: torch.Tensor, student_out: torch.Tensor, backbone, temperature: float) -> dict:
    return {"kd": detection_kd(teacher_out, student_out, backbone.detector.config)}


class ClassificationHeldout:
    """top1_agreement: how often tail(h~) predicts the backbone's own class; kl_divergence: KL of
    the class distributions in nats (smoother)."""

    def __init__(self, backbone):
        self.agree = self.kl = 0.0

    def add(self, teacher_out: torch.Tensor, student_out: torch.Tensor) -> None:
        log_p, log_q = teacher_out.log_softmax(1), student_out.log_softmax(1)
        self.agree += float((log_q.argmax(1) == log_p.argmax(1)).sum())
        self.kl += float((log_p.exp() * (log_p - log_q)).sum())

    def result(self, frames: int) -> dict:
        return {"top1_agreement": self.agree / frames, "kl_divergence": self.kl / frames}


class DetectionHeldout:
    """fidelity_map50 (with its bootstrap interval) / fidelity_map50_95: tail(h~)'s detections
    scored against tail(h)'s (evaluation/detection_fidelity.py)."""

    def __init__(self, backbone):
        self.detector = backbone.detector
        self.reference, self.predicted = [], []

    def add(self, teacher_out: torch.Tensor, student_out: torch.Tensor) -> None:
        self.reference += _canvas_detections(self.detector, teacher_out, REFERENCE_THRESHOLD)
        self.predicted += _canvas_detections(self.detector, student_out, EVALUATION_THRESHOLD)

    def result(self, frames: int) -> dict:
        out = {}
        out["fidelity_map50"], out["fidelity_map50_95"] = fidelity_map(
            self.reference, self.predicted, self.detector.config.num_classes)
        out["fidelity_map50_lo"], out["fidelity_map50_hi"] = map50_interval(self.reference, self.predicted)
        out["reference_detections"] = sum(len(r) for r in self.reference)
        return out


KD_TERMS = {"classification": classification_kd, "detection": detector_kd}
HELDOUT_SCORES = {"classification": ClassificationHeldout, "detection": DetectionHeldout}
if not set(TASKS) == set(KD_TERMS) == set(HELDOUT_SCORES):
    raise ImportError(f"tasks {sorted(TASKS)} need a KD term and a held-out score each for bottleneck training")


def _canvas_detections(detector, outputs: torch.Tensor, threshold: float) -> list[list]:
    """Per-sample detections in model-input pixels (the held-out crop is the whole input)."""
    from fsplit_ros.detection.detector import LetterboxMeta
    size = detector.input_size
    meta = LetterboxMeta(size, size, 1.0, 0, 0, size)
    return [detector.postprocess(o.unsqueeze(0).cpu(), meta, score_threshold=threshold) for o in outputs]


# --- sweeps -------------------------------------------------------------------------------------

def train_sweep(cfg: TrainConfig, resume: bool = False, progress: bool = True,
                command: str | None = None, backbone: LoadedBackbone | None = None
                ) -> list[TrainResult]:
    """Train one checkpoint per beta in cfg.betas (shared backbone, frames and saliency)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{cfg.device}' requested but CUDA is not available: use --device cpu")
    backbone = backbone or load_backbone(cfg.backbone, cfg.weights)
    if backbone.name != cfg.backbone and backbone.spec.timm_name != cfg.backbone:
        warnings.warn(f"config backbone '{cfg.backbone}' but '{backbone.name}' was passed in")
    bcfg = resolve_bottleneck_config(cfg, backbone)
    data = prepare_data(cfg, backbone, bcfg.injection_split, progress)
    if cfg.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True   # fixed training shapes from here on
    if progress:
        print(f"training {backbone.name} bottleneck at split {bcfg.injection_split} "
              f"({bcfg.target_channels}x{bcfg.target_side}^2): "
              f"{len(data.train_frames)} training frames from {len(data.train_sources)} files, "
              f"{len(data.heldout_frames)} held-out frames; betas {cfg.betas}", file=sys.stderr)
    return [BottleneckTrainer(cfg, beta, backbone, data, bcfg, command, progress).train(resume)
            for beta in cfg.betas]


def train_bottleneck(cfg: TrainConfig, beta: float | None = None, resume: bool = False,
                     progress: bool = True, command: str | None = None) -> Path:
    """Train a single bottleneck (beta, or the config's first) and return its checkpoint path."""
    cfg = cfg.replace(betas=[beta if beta is not None else cfg.betas[0]])
    return train_sweep(cfg, resume, progress, command)[0].checkpoint


__all__: Sequence[str] = ["BottleneckTrainer", "StepBatches", "TrainResult", "TrainingData",
                          "TrainingStateError", "beta_tag", "lr_factor", "prepare_data",
                          "resolve_bottleneck_config", "split_parameters", "train_bottleneck",
                          "train_sweep"]
