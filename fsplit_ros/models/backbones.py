"""Backbone registry: every deployable model by name, classifiers and the COCO detector alike.

A `BackboneSpec` names the model's task (fsplit_ros/tasks.py) and how it is built and loaded: timm
classifiers with ImageNet weights that ship offline in registry packages (see weights.py), and
NanoDet from its original files. Whatever loads it, a model comes back as a `LoadedBackbone` whose
network is a chain of units (splitting/), so splitting, bottleneck training and deployment treat
every backbone alike. Any other timm model works with a local checkpoint
(`load_backbone("resnet50", weights="r50.pth")`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import timm
import torch

from fsplit_ros.hashing import state_dict_hash
from fsplit_ros.models import weights as offline


def _timm_architecture(spec: "BackboneSpec") -> torch.nn.Module:
    return timm.create_model(spec.timm_name, pretrained=False)


def _nanodet_architecture(spec: "BackboneSpec") -> torch.nn.Module:
    from fsplit_ros.detection.nanodet_net import NanoDetNet
    return NanoDetNet()


def _load_timm(spec: "BackboneSpec", weights: str | Path | None) -> "LoadedBackbone":
    """A timm model with real weights: `weights` (a local file) or the spec's offline default.
    A checkpoint in timm's own layout loads strictly; one in the layout of the original
    implementation (EfficientNet-PyTorch, torchvision) is mapped by registration order."""
    model = timm.create_model(spec.timm_name, pretrained=False)
    if weights is None:
        if spec.default_weights is None:
            raise offline.WeightsNotFound(
                f"no offline weights are known for '{spec.name}': pass weights=/path/to/checkpoint.pth "
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


def _load_nanodet(spec: "BackboneSpec", model_dir: str | Path | None) -> "LoadedBackbone":
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


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the system needs to know about a deployable backbone."""
    name: str                     # fsplit name (topic/param value), e.g. "efficientnet_lite0"
    timm_name: str                # timm architecture (or the model's own name, e.g. "nanodet-g")
    default_weights: Callable[[], Path] | None = None   # offline weight file, original layout
    # Where FrankenSplit injects its bottleneck: the split index (see splitting.py) whose output
    # the decoder blueprint reconstructs. After the stem and the first stages (stride 8).
    injection_split: int = 6
    task: str = "classification"  # fsplit_ros.tasks.TASKS key
    # spec, weights (a local file or folder, None = default) -> LoadedBackbone; spec -> bare network
    loader: Callable[["BackboneSpec", str | Path | None], "LoadedBackbone"] = _load_timm
    architecture: Callable[["BackboneSpec"], torch.nn.Module] = _timm_architecture


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in [
        BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0", offline.efficientnet_lite0_file,
                     injection_split=6),
        BackboneSpec("mobilenetv2", "mobilenetv2_100", offline.mobilenet_v2_file, injection_split=7),
        BackboneSpec("efficientnet_lite2", "tf_efficientnet_lite2", offline.efficientnet_lite2_file,
                     injection_split=6),
        # NanoDet-g (fsplit_ros.detection) injects after csp2_in (64x52x52, stride 8 at 416): the
        # last split point before the multi-scale neck (docs/DETECTOR.md).
        BackboneSpec("nanodet", "nanodet-g", injection_split=5, task="detection", loader=_load_nanodet,
                     architecture=_nanodet_architecture),
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
    data_config: dict = field(default_factory=dict)   # timm's: input_size, mean, std (+ channel_order)
    detector: object | None = None    # the detection task's fsplit_ros.detection.NanoDet (letterbox, NMS)

    @property
    def task(self):
        """The fsplit_ros.tasks.Task this backbone serves."""
        from fsplit_ros.tasks import task_named
        return task_named(self.spec.task)

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    @property
    def channel_order(self) -> str:
        """Channel order the model's first layer expects ("rgb", or "bgr" for NanoDet)."""
        return self.data_config.get("channel_order", "rgb")


def resolve_spec(name: str) -> BackboneSpec:
    """A registered backbone, or an ad-hoc classifier spec for any timm architecture name."""
    if name in BACKBONES:
        return BACKBONES[name]
    for spec in BACKBONES.values():
        if spec.timm_name == name:
            return spec
    if name not in timm.list_models():
        raise ValueError(f"unknown backbone '{name}': use one of {sorted(BACKBONES)} "
                         f"or a timm model name (timm.list_models())")
    return BackboneSpec(name=name, timm_name=name)


def load_backbone(name: str, weights: str | Path | None = None) -> LoadedBackbone:
    """The backbone with real weights: `weights` (a local file or folder) or its offline default.
    Never downloads."""
    spec = resolve_spec(name)
    return spec.loader(spec, weights)


def build_architecture(name: str) -> torch.nn.Module:
    """The network of backbone `name` without weights (a checkpoint fills them in)."""
    spec = resolve_spec(name)
    return spec.architecture(spec)
