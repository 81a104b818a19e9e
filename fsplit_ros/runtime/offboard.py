"""Edge side: validate and decode payloads, run the backbone tail, batch frames that share a
split point. Every rejection is a typed PayloadError; nothing large is allocated before checks."""
from __future__ import annotations

import torch

from fsplit_ros.codecs import EntropyCodec
from fsplit_ros.modes import MODES
from fsplit_ros.payload import Limits, RefusedMode, unpack_payload
from fsplit_ros.runtime.deployment import Deployment
from fsplit_ros.runtime.payload_modes import PAYLOAD_MODES, DecodedFrame
from fsplit_ros.runtime.shared_models import SharedModel


class EdgeDecoder:
    def __init__(self, deployment: Deployment, limits: Limits = Limits(), refused_modes=frozenset(),
                 shared_models: list[SharedModel] = ()):
        """refused_modes: modes rejected (RefusedMode) right after the header checks, before their
        body is decoded; e.g. {"image"} where no pixels may be processed. May be changed later.
        shared_models: further models that answer bottleneck payloads too (runtime/shared_models.py)."""
        self.dep = deployment
        self.shared_models = list(shared_models)
        self.limits = limits
        self.refused_modes = frozenset(refused_modes)
        self.hashes = deployment.model_hashes()
        self.entropy_codec = EntropyCodec(deployment.bottleneck) if deployment.bottleneck else None
        self._tails: dict[int, torch.nn.Module] = {}

    def tail(self, index: int) -> torch.nn.Module:
        if index not in self._tails:
            self._tails[index] = self.dep.splittable.tail(index)
        return self._tails[index]

    def decode(self, payload: bytes) -> DecodedFrame:
        header, body = unpack_payload(payload, self.hashes, self.limits)
        if header.mode in self.refused_modes:
            raise RefusedMode(f"{header.mode} payloads are refused by this edge"
                              + (" (allow_image_mode=false)" if MODES[header.mode].sends_pixels else ""))
        return PAYLOAD_MODES[header.mode].decode(self, header, body)

    @torch.no_grad()
    def run_tails(self, frames: list[DecodedFrame]) -> list[torch.Tensor]:
        """Model outputs for decoded frames, one batched tail call per distinct split point."""
        outputs: list[torch.Tensor | None] = [None] * len(frames)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.tail_from, []).append(i)
        for start, idx in groups.items():
            batch = torch.cat([frames[i].features for i in idx], dim=0)
            out = self.tail(start)(batch)
            for j, i in enumerate(idx):
                outputs[i] = out[j:j + 1]
        return outputs

    def run_shared_models(self, frames: list[DecodedFrame]) -> dict[str, list[torch.Tensor | None]]:
        """Per shared model, its output for each frame that carries a latent (None for the others:
        split and image payloads belong to the deployment's model alone)."""
        with_latent = [i for i, f in enumerate(frames) if f.latent is not None]
        results = {}
        for model in self.shared_models:
            outputs: list[torch.Tensor | None] = [None] * len(frames)
            if with_latent:
                for i, out in zip(with_latent, model.outputs([frames[i].latent for i in with_latent])):
                    outputs[i] = out
            results[model.name] = outputs
        return results
