"""Backbone registry: timm models by name with weights from local files, and the COCO detector.

Two defaults have ImageNet weights that ship offline in registry packages (see weights.py). Any
other timm model works with a local checkpoint (`load_backbone("resnet50", weights="r50.pth")`).
`load_backbone("nanodet")` gives the detector (fsplit_ros.detection) in the same form, so
splitting, bottleneck training and deployment treat it like any other backbone.
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
        BackboneSpec("efficientnet_lite2", "tf_efficientnet_lite2", offline.efficientnet_lite2_file,
                     injection_split=6),
    ]
}

# Detectors (fsplit_ros.detection): not timm models. NanoDet-g injects after csp2_in (64x52x52,
# stride 8 at 416): the last split point before the multi-scale neck (docs/DETECTOR.md).
DETECTORS: dict[str, BackboneSpec] = {"nanodet": BackboneSpec("nanodet", "nanodet-g", injection_split=5)}


@dataclass
class LoadedBackbone:
    """A frozen, eval-mode backbone plus its data config and a hash of its exact weights."""
    name: str
    spec: BackboneSpec
    model: torch.nn.Module
    weights_source: str
    weights_hash: str
    data_config: dict = field(default_factory=dict)   # timm's: input_size, mean, std (+ channel_order)
    detector: object | None = None    # fsplit_ros.detection.NanoDet (letterbox, decode, NMS) or None

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    @property
    def channel_order(self) -> str:
        """Channel order the model's first layer expects ("rgb", or "bgr" for NanoDet)."""
        return self.data_config.get("channel_order", "rgb")


def resolve_spec(name: str) -> BackboneSpec:
    """A registered backbone or detector, or an ad-hoc spec for any timm architecture name."""
    if name in BACKBONES:
        return BACKBONES[name]
    if name in DETECTORS:
        return DETECTORS[name]
    for spec in BACKBONES.values():
        if spec.timm_name == name:
            return spec
    if name not in timm.list_models():
        raise ValueError(f"unknown backbone '{name}': use one of {sorted(BACKBONES) + sorted(DETECTORS)} "
                         f"or a timm model name (timm.list_models())")
    return BackboneSpec(name=name, timm_name=name)


def load_backbone(name: str, weights: str | Path | None = None) -> LoadedBackbone:
    """Build the timm model and load real weights: `weights` (a local file) or the offline default.

    Never downloads. A checkpoint in timm's own layout loads strictly; one in the layout of the
    original implementation (EfficientNet-PyTorch, torchvision) is mapped by registration order.
    """
    spec = resolve_spec(name)
    if spec.name in DETECTORS:
        return _load_detector(spec, weights)
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


def build_architecture(name: str) -> torch.nn.Module:
    """The network of backbone `name` without weights (a checkpoint fills them in)."""
    spec = resolve_spec(name)
    if spec.name in DETECTORS:
        from fsplit_ros.detection.nanodet_net import NanoDetNet
        return NanoDetNet()
    return timm.create_model(spec.timm_name, pretrained=False)


def _load_detector(spec: BackboneSpec, model_dir: str | Path | None) -> LoadedBackbone:
    """NanoDet-g from its original files (`model_dir`, or the verified cache fetched with npm).
    mean/std are NanoDet's pixel statistics / 255, in the model's BGR order."""
    from fsplit_ros.detection import load_nanodet
    from fsplit_ros.detection.detector import MEAN_BGR, STD_BGR
    detector = load_nanodet(model_dir) if model_dir else load_nanodet()
    size = detector.input_size
    data_config = {"input_size": (3, size, size), "channel_order": "bgr",
                   "mean": tuple(m / 255 for m in MEAN_BGR), "std": tuple(s / 255 for s in STD_BGR),
                   "crop_pct": 1.0}
    return LoadedBackbone(name=spec.name, spec=spec, model=detector.model.eval().requires_grad_(False),
                          weights_source=detector.weights_source, weights_hash=detector.weights_hash,
                          data_config=data_config, detector=detector)
