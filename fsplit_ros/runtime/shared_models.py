"""Further edge models served by one payload (issue 19): each reads the rounded latent of the
deployment's bottleneck (the shared encoder) through its own fitted decoder and runs its own tail.

The robot sends one bottleneck payload per frame, whatever the number of models on the edge; the
deployment's own model decodes it with the bottleneck's g_s, every `SharedModel` with its decoder
(fsplit_ros/bottleneck/shared.py). A decoder fitted to another encoder is refused when it is
loaded, with the reason. Split and image payloads belong to the deployment's model alone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fsplit_ros.bottleneck.shared import SharedDecoder, SharedDecoderMismatch, load_shared_decoder
from fsplit_ros.launch_support import further_model_names
from fsplit_ros.models.backbones import BACKBONES
from fsplit_ros.runtime.deployment import DEFAULT_WEIGHTS_DIR, Deployment
from fsplit_ros.tasks import TASKS


def model_task(model: str):
    """The task (fsplit_ros.tasks) of a registered model; unknown names raise ValueError."""
    if model not in BACKBONES:
        raise ValueError(f"unknown model '{model}': use one of {sorted(BACKBONES)}")
    return TASKS[BACKBONES[model].task]


def result_topic(model: str) -> str:
    """Where the edge decoder publishes a further model's results (relative to the robot's
    namespace): <model>/<its task's result topic>. Unknown names raise ValueError."""
    return f"{model}/{model_task(model).result_topic}"


def default_decoder_path(model: str, encoder_backbone: str, directory: str | Path | None = None) -> Path:
    """Where the decoder of `model` for `encoder_backbone`'s shared encoder is looked for."""
    return Path(directory or DEFAULT_WEIGHTS_DIR) / f"{model}_from_{encoder_backbone}.pt"


@dataclass
class SharedModel:
    name: str
    deployment: Deployment          # the edge model (no bottleneck of its own)
    decoder: SharedDecoder
    decoder_hash: str
    tail: torch.nn.Module
    heldout: dict                   # family -> top-1 agreement the decoder's training run measured

    def fidelity_note(self) -> str:
        if not self.heldout:
            return "no held-out fidelity recorded with its decoder"
        return "held-out top-1 agreement with the unmodified model " + ", ".join(
            f"{100 * v:.1f} % ({family})" for family, v in sorted(self.heldout.items()))

    @classmethod
    def load(cls, name: str, encoder: Deployment, decoder_dir: str | Path | None = None,
             weights: str | Path | None = None) -> "SharedModel":
        """`name`'s decoder for `encoder`'s bottleneck, checked against it and against the model."""
        task = model_task(name)
        if task.name != encoder.task.name:
            raise SharedDecoderMismatch(
                f"{name} does {task.name} on its own view of the frame, but {encoder.name}'s encoder codes the "
                f"{encoder.task.name} crop: decoders across tasks are not built yet (BENCHMARKS.md section 10); "
                f"run {name} with its own encoder and decoder (backbone:={name})")
        if encoder.bottleneck is None:
            raise SharedDecoderMismatch(f"{name} would read the latent of {encoder.name}'s bottleneck, but "
                                        f"none is loaded: set bottleneck_checkpoint")
        path = default_decoder_path(name, encoder.name, decoder_dir)
        if not path.is_file():
            raise SharedDecoderMismatch(
                f"no decoder of {name} for {encoder.name}'s encoder at {path}: fit one with python -m "
                f"fsplit_ros.training.shared_decoder --target {name} --encoder {encoder.name}")
        decoder, info = load_shared_decoder(path, encoder_hash=encoder.bottleneck_hash)
        cfg = decoder.config
        if cfg.backbone != name:
            raise SharedDecoderMismatch(f"{path} decodes for {cfg.backbone}, not {name}")
        dep = Deployment.load(name, weights, bottleneck=None)
        want = dep.split_point(cfg.injection_split).shape
        if (1, cfg.target_channels, cfg.target_side, cfg.target_side) != tuple(want):
            raise SharedDecoderMismatch(f"{path} reconstructs {cfg.target_channels}x{cfg.target_side}^2 at split "
                                        f"{cfg.injection_split}, but {name} has {want} there")
        tail = dep.splittable.tail(cfg.injection_split)
        last = info["metadata"].get("heldout") or {}
        heldout = {family: float(r["top1_agreement"]) for family, r in last.items()
                   if isinstance(r, dict) and "top1_agreement" in r}
        return cls(name, dep, decoder, info["hash"], tail, heldout)

    @torch.no_grad()
    def outputs(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """One batched decoder + tail call over the frames' latents; one output per frame."""
        out = self.tail(self.decoder(torch.cat(latents)))
        return [out[i:i + 1] for i in range(len(latents))]


def load_shared_models(models, encoder: Deployment, decoder_dir: str | Path | None = None) -> list[SharedModel]:
    """The further models among `models` (empty names and the encoder's own model skipped, each
    once), loaded and checked against `encoder`'s bottleneck; a failure names the model."""
    loaded = []
    for name in further_model_names(models, encoder.name):
        try:
            loaded.append(SharedModel.load(name, encoder, decoder_dir))
        except ValueError as exc:   # SharedDecoderMismatch, or an unknown backbone
            raise SharedDecoderMismatch(f"cannot serve model '{name}': {exc}") from None
    return loaded
