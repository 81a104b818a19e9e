"""Split a backbone into head and tail at any point where one tensor carries everything.

A model is decomposed into an ordered list of *units* whose composition is exactly the model's
forward pass (same modules, same order, so `tail(head(x))` is bit-identical to `model(x)`). Split
index l means "the first l units run onboard": l = 0 sends the input (full offload), l = L runs
everything onboard. The compression ratio of a split point is `c_l = |h_l| / |x|` in bytes, with
|x| the uint8 camera input at the model resolution and |h_l| the tensor in the transmitted dtype.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


class UnsupportedModel(TypeError):
    """The model has no known sequential decomposition; say which structure is supported."""


@dataclass(frozen=True)
class SplitPoint:
    index: int                 # number of units in the head
    name: str                  # the last head unit, e.g. "blocks.2.1"
    shape: tuple[int, ...]     # tensor shape at batch size 1
    compression: float         # c_l for the transmitted dtype
    natural_bottleneck: bool   # c_l < 1
    compressive: bool          # natural bottleneck and a new prefix minimum of c_l

    def to_dict(self) -> dict:
        return asdict(self)


def _efficientnet_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's EfficientNet family (EfficientNet, -Lite, MobileNetV2/V3, MixNet, ...)."""
    units = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            units.append((f"blocks.{s}.{b}", block))
    head_layers = [model.conv_head] + ([model.bn2] if hasattr(model, "bn2") else [])
    if hasattr(model, "act2"):
        head_layers.append(model.act2)
    units.append(("conv_head", nn.Sequential(*head_layers)))
    units.append(("global_pool", model.global_pool))
    if hasattr(model, "flatten"):
        units.append(("flatten", model.flatten))
    units.append(("classifier", model.classifier))
    return units


def _resnet_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's ResNet family (ResNet, Wide ResNet, ResNeXt): stem, every residual block, head."""
    units = [("stem", nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool))]
    for i in range(1, 5):
        for b, block in enumerate(getattr(model, f"layer{i}")):
            units.append((f"layer{i}.{b}", block))
    units += [("global_pool", model.global_pool), ("fc", model.fc)]
    return units


def sequential_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "global_pool",
                                       "classifier")):
        return _efficientnet_units(model)
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer4", "fc")):
        return _resnet_units(model)
    if isinstance(model, nn.Sequential):
        return [(name, m) for name, m in model.named_children()]
    raise UnsupportedModel(
        f"{type(model).__name__} has no known sequential decomposition: supported are timm's "
        f"EfficientNet family (EfficientNet, MobileNetV2/V3, ...), the ResNet family and nn.Sequential")


def map_stride(size: int, side: int) -> int | None:
    """The power-of-two stride of a `side` x `side` map of a `size` input ("same" padding rounds up:
    Lite2's 260 input gives a 9x9 map at stride 32), or None if it is no such map."""
    if side <= 0:
        return None
    stride = 2 ** round(math.log2(size / side))
    return stride if -(-size // stride) == side else None


def compressive_bottlenecks(compressions: list[float]) -> list[bool]:
    """Natural bottlenecks (c < 1) whose c is below that of every earlier bottleneck."""
    flags, best = [], 1.0
    for c in compressions:
        is_new_min = c < best
        flags.append(is_new_min)
        if is_new_min:
            best = c
    return flags


class SplittableModel:
    """A model seen as a chain of units; builds heads and tails that share its modules."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.units = sequential_units(model)

    @property
    def num_units(self) -> int:
        return len(self.units)

    def unit_names(self) -> list[str]:
        return [n for n, _ in self.units]

    def _check(self, index: int):
        if not 0 <= index <= self.num_units:
            raise ValueError(f"split index {index} outside 0..{self.num_units}")

    def head(self, index: int) -> nn.Sequential:
        self._check(index)
        return nn.Sequential(*[m for _, m in self.units[:index]])

    def tail(self, index: int) -> nn.Sequential:
        self._check(index)
        return nn.Sequential(*[m for _, m in self.units[index:]])

    @torch.no_grad()
    def split_points(self, input_size: int, bytes_per_element: float = 2.0) -> list[SplitPoint]:
        """Every inner split point 1..L-1 with its shape and c_l for the transmitted dtype."""
        x = torch.zeros(1, 3, input_size, input_size)
        input_bytes = 3 * input_size * input_size   # uint8 camera pixels at model resolution
        shapes = []
        was_training = self.model.training
        self.model.eval()
        for _, unit in self.units[:-1]:
            x = unit(x)
            shapes.append(tuple(x.shape))
        self.model.train(was_training)
        ratios = [torch.Size(s).numel() * bytes_per_element / input_bytes for s in shapes]
        compressive = compressive_bottlenecks(ratios)
        return [SplitPoint(index=i + 1, name=self.units[i][0], shape=shapes[i], compression=ratios[i],
                           natural_bottleneck=ratios[i] < 1.0, compressive=compressive[i])
                for i in range(len(shapes))]
