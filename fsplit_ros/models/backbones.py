"""Backbone registry: timm models by name with weights from local files.

Two defaults have ImageNet weights that ship offline in registry packages (see weights.py). Any
other timm model works with a local checkpoint (`load_backbone("resnet50", weights="r50.pth")`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import timm
import torch

from fsplit_ros.hashing import state_dict_hash
from fsplit_ros.models import weights as offline


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the system needs to know about a deployable backbone."""
    name: str                     # fsplit name (topic/param value), e.g. "efficientnet_lite0"
    timm_name: str                # timm architecture
    default_weights: Callable[[], Path] | None = None   # offline weight file, original layout
    # Where FrankenSplit injects its bottleneck: the split index (see splitting.py) whose output
    # the decoder blueprint reconstructs. After the stem and the first stages (stride 8).
    injection_split: int = 6


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in [
        BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0", offline.efficientnet_lite0_file,
                     injection_split=6),
        BackboneSpec("mobilenetv2", "mobilenetv2_100", offline.mobilenet_v2_file, injection_split=7),
    ]
}


@dataclass
class LoadedBackbone:
    """A frozen, eval-mode backbone plus its data config and a hash of its exact weights."""
    name: str
    spec: BackboneSpec
    model: torch.nn.Module
    weights_source: str
    weights_hash: str
    data_config: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])


def resolve_spec(name: str) -> BackboneSpec:
    """A registered backbone, or an ad-hoc spec for any timm architecture name."""
    if name in BACKBONES:
        return BACKBONES[name]
    for spec in BACKBONES.values():
        if spec.timm_name == name:
            return spec
    if name not in timm.list_models():
        raise ValueError(f"unknown backbone '{name}': use one of {sorted(BACKBONES)} or a timm model "
                         f"name (timm.list_models())")
    return BackboneSpec(name=name, timm_name=name)


def load_backbone(name: str, weights: str | Path | None = None) -> LoadedBackbone:
    """Build the timm model and load real weights: `weights` (a local file) or the offline default.

    Never downloads. A checkpoint in timm's own layout loads strictly; one in the layout of the
    original implementation (EfficientNet-PyTorch, torchvision) is mapped by registration order.
    """
    spec = resolve_spec(name)
    model = timm.create_model(spec.timm_name, pretrained=False)
    if weights is None:
        if spec.default_weights is None:
            raise offline.WeightsNotFound(
                f"no offline weights are known for '{name}': pass weights=/path/to/checkpoint.pth "
                f"(a timm state dict for {spec.timm_name})")
        weights = spec.default_weights()
    state = offline.load_file(weights)
    if set(state) != set(model.state_dict()):
        state = offline.map_state_dict(state, model)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    data_config = timm.data.resolve_data_config({}, model=model)
    return LoadedBackbone(name=spec.name, spec=spec, model=model, weights_source=str(weights),
                          weights_hash=state_dict_hash(model.state_dict(), spec.timm_name),
                          data_config=data_config)
