"""Read a TensorFlow.js graph model (model.json + weight shards) without TensorFlow.

A TF.js *graph model* is a JSON manifest holding a frozen TensorFlow GraphDef (``modelTopology``:
nodes with op, inputs and attributes) and a ``weightsManifest`` that says, group by group, which
shard files to concatenate and how to cut the resulting buffer into named tensors (shape, dtype,
optional quantization). Every ``Const`` node of the graph is one of those tensors.

Two things live here:

* :func:`load_graph_model` decodes the manifest and the little-endian buffers into numpy arrays,
  including the converter's weight quantization (float16, or affine uint8/uint16 with scale/min),
  so a PyTorch port can load the *original* numbers instead of a re-exported copy.
* :class:`GraphInterpreter` runs the graph op by op with torch. It is deliberately literal (NHWC
  where TensorFlow is NHWC, TF's own resize formula) and slow-ish: its purpose is to be an
  independent executable specification of the file, against which the hand-written, splittable
  PyTorch network is checked tensor for tensor. It implements the ops the graph models used here
  need; anything else raises :class:`UnsupportedOp` naming the op, instead of guessing.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class TfjsFormatError(ValueError):
    """The model.json / weight shards are not a TF.js graph model this reader understands."""


class UnsupportedOp(NotImplementedError):
    """The graph uses an op (or an attribute value) the interpreter does not implement."""


_PLAIN_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1")}
_QUANT_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}


@dataclass
class Node:
    """One GraphDef node with its attributes decoded to plain Python values."""
    name: str
    op: str
    inputs: list[str]
    attr: dict = field(default_factory=dict)


@dataclass
class GraphModel:
    nodes: dict[str, Node]                       # by name, in file order
    weights: dict[str, np.ndarray]               # Const values by node name
    inputs: dict[str, tuple[int, ...]]           # signature: placeholder name -> shape
    outputs: list[str]                           # signature: output tensor names ("Identity:0")
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)     # format, generatedBy, convertedBy, ...


def _decode_attr(value: dict):
    """Protobuf-JSON AttrValue -> Python value (str, int, float, bool, list, dtype or shape)."""
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return tuple(int(d.get("size", -1)) for d in value["shape"].get("dim", []))
    if "list" in value:
        lst = value["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    return value   # tensors and funcs: kept raw, unused by the ops implemented here


def _decode_weights(manifest: list[dict], base: Path) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        paths = [base / p for p in group.get("paths", [])]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TfjsFormatError(f"weight shard(s) missing next to the manifest: {missing}")
        buf = b"".join(p.read_bytes() for p in paths)
        offset = 0
        for spec in group["weights"]:
            name, shape, dtype = spec["name"], tuple(int(s) for s in spec["shape"]), spec["dtype"]
            count = math.prod(shape)
            quant = spec.get("quantization")
            if dtype not in _PLAIN_DTYPES:
                raise TfjsFormatError(f"weight {name}: dtype {dtype!r} is not supported "
                                      f"(supported: {sorted(_PLAIN_DTYPES)})")
            stored = _QUANT_DTYPES.get(quant["dtype"]) if quant else _PLAIN_DTYPES[dtype]
            if stored is None:
                raise TfjsFormatError(f"weight {name}: quantization dtype {quant['dtype']!r} is not "
                                      f"supported (supported: {sorted(_QUANT_DTYPES)})")
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buf):
                raise TfjsFormatError(f"weight {name} needs bytes {offset}..{offset + nbytes} but the "
                                      f"shards of its group hold only {len(buf)}: truncated download?")
            raw = np.frombuffer(buf, dtype=stored, count=count, offset=offset)
            offset += nbytes
            if quant and quant["dtype"] == "float16":
                value = raw.astype(np.float32)
            elif quant:
                # Affine quantization of the TF.js converter: v = q * scale + min.
                value = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                if dtype == "int32":
                    value = np.round(value)
            else:
                value = raw
            weights[name] = value.astype(_PLAIN_DTYPES[dtype] if dtype != "bool" else np.bool_
                                         ).reshape(shape)
        if offset != len(buf):
            raise TfjsFormatError(f"the shards {[p.name for p in paths]} hold {len(buf)} bytes but the "
                                  f"manifest describes {offset}: wrong or corrupted weight file")
    return weights


def load_graph_model(model_json: str | Path) -> GraphModel:
    """Parse a TF.js graph model; the weight shards are resolved next to the JSON file."""
    model_json = Path(model_json)
    try:
        doc = json.loads(model_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TfjsFormatError(f"cannot read TF.js manifest {model_json}: {exc}") from exc
    if doc.get("format") not in (None, "graph-model") or "modelTopology" not in doc:
        raise TfjsFormatError(f"{model_json} is not a TF.js graph model (format={doc.get('format')!r})")
    nodes = {}
    for n in doc["modelTopology"].get("node", []):
        attr = {k: _decode_attr(v) for k, v in n.get("attr", {}).items() if k != "value"}
        nodes[n["name"]] = Node(n["name"], n["op"], list(n.get("input", [])), attr)
    weights = _decode_weights(doc.get("weightsManifest", []), model_json.parent)
    missing = [n.name for n in nodes.values() if n.op == "Const" and n.name not in weights]
    if missing:
        raise TfjsFormatError(f"Const nodes without a value in the weights manifest: {missing[:5]}")
    sig = doc.get("signature") or doc["modelTopology"].get("signature") or {}
    inputs = {}
    for name, spec in sig.get("inputs", {}).items():
        dims = spec.get("tensorShape", {}).get("dim", [])
        inputs[name.split(":")[0]] = tuple(int(d.get("size", -1)) for d in dims)
    outputs = sorted(sig.get("outputs", {}), key=_output_order)
    output_shapes = {name: tuple(int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", []))
                     for name, spec in sig.get("outputs", {}).items()}
    meta = {k: v for k, v in doc.items() if k not in ("modelTopology", "weightsManifest", "signature")}
    return GraphModel(nodes=nodes, weights=weights, inputs=inputs, outputs=outputs,
                      output_shapes=output_shapes, meta=meta)


def _output_order(name: str):
    """'Identity:0' < 'Identity_1:0' < ... < 'Identity_10:0' (numeric suffix order)."""
    base = name.split(":")[0]
    stem, _, num = base.rpartition("_")
    return (stem, int(num)) if num.isdigit() and stem else (base, -1)


# ---------------------------------------------------------------------------------------------
# Interpreter
# ---------------------------------------------------------------------------------------------

def _nhwc_to_nchw(x):
    return x.permute(0, 3, 1, 2)


def _nchw_to_nhwc(x):
    return x.permute(0, 2, 3, 1)


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (the extra pixel goes after, unlike PyTorch's symmetric pad)."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _resize_bilinear_tf(x: torch.Tensor, out_h: int, out_w: int, align_corners: bool,
                        half_pixel: bool) -> torch.Tensor:
    """tf.raw_ops.ResizeBilinear on NHWC, written from TensorFlow's kernel (not torch's):
    source coordinate, floor/ceil clamped to the image, linear interpolation weights."""
    def axis(in_size: int, out_size: int):
        if align_corners and out_size > 1:
            scale = (in_size - 1) / (out_size - 1)
        else:
            scale = in_size / out_size
        pos = torch.arange(out_size, dtype=torch.float32)
        src = (pos + 0.5) * scale - 0.5 if half_pixel else pos * scale
        low_f = torch.floor(src)
        lo = low_f.clamp(min=0).long()
        hi = torch.ceil(src).clamp(max=in_size - 1).long()
        return lo, hi, (src - low_f)

    _, h, w, _ = x.shape
    y0, y1, ly = axis(h, out_h)
    x0, x1, lx = axis(w, out_w)
    top = x[:, y0] + (x[:, y1] - x[:, y0]) * ly.view(1, -1, 1, 1)
    bottom_left = top[:, :, x0]
    bottom_right = top[:, :, x1]
    return bottom_left + (bottom_right - bottom_left) * lx.view(1, 1, -1, 1)


class GraphInterpreter:
    """Execute a :class:`GraphModel` with torch ops, following TensorFlow's semantics."""

    def __init__(self, graph: GraphModel):
        self.graph = graph
        self._ops = {
            "Const": None, "Placeholder": None, "Identity": self._identity,
            "Transpose": self._transpose, "Pad": self._pad, "PadV2": self._pad,
            "Conv2D": self._conv2d, "BiasAdd": self._add, "Add": self._add, "AddV2": self._add,
            "Sub": lambda n, a: [a[0] - a[1]], "Mul": lambda n, a: [a[0] * a[1]],
            "RealDiv": lambda n, a: [a[0] / a[1]],
            "Relu": lambda n, a: [F.relu(a[0])], "Relu6": lambda n, a: [a[0].clamp(0, 6)],
            "LeakyRelu": lambda n, a: [F.leaky_relu(a[0], n.attr.get("alpha", 0.2))],
            "Sigmoid": lambda n, a: [torch.sigmoid(a[0])],
            "MaxPool": self._maxpool, "ConcatV2": self._concat, "ResizeBilinear": self._resize,
            "SplitV": self._splitv, "Reshape": self._reshape, "SparseToDense": self._sparse_to_dense,
        }
        for node in graph.nodes.values():
            if node.op not in self._ops:
                raise UnsupportedOp(f"graph node {node.name} uses op {node.op}, which the TF.js "
                                    f"interpreter does not implement")

    # -- ops: each takes (node, input values) and returns the list of outputs --
    @staticmethod
    def _identity(node, args):
        return [args[0]]

    @staticmethod
    def _add(node, args):
        return [args[0] + args[1]]

    @staticmethod
    def _transpose(node, args):
        return [args[0].permute(*[int(v) for v in args[1].tolist()]).contiguous()]

    @staticmethod
    def _pad(node, args):
        pads = [int(v) for v in args[1].flatten().tolist()]
        value = float(args[2]) if len(args) > 2 else 0.0
        torch_pads = []
        for dim in reversed(range(len(pads) // 2)):     # F.pad lists the last dimension first
            torch_pads += [pads[2 * dim], pads[2 * dim + 1]]
        return [F.pad(args[0], torch_pads, value=value)]

    @staticmethod
    def _conv2d(node, args):
        x, w = args
        fmt = node.attr.get("data_format", "NHWC")
        strides, dil = node.attr.get("strides", [1, 1, 1, 1]), node.attr.get("dilations", [1, 1, 1, 1])
        hw = (1, 2) if fmt == "NHWC" else (2, 3)
        s, d = (strides[hw[0]], strides[hw[1]]), (dil[hw[0]], dil[hw[1]])
        x = _nhwc_to_nchw(x) if fmt == "NHWC" else x
        kernel = w.permute(3, 2, 0, 1)                          # HWIO -> OIHW
        padding = node.attr.get("padding", "VALID")
        if padding == "SAME":
            ph = _same_pads(x.shape[2], kernel.shape[2], s[0], d[0])
            pw = _same_pads(x.shape[3], kernel.shape[3], s[1], d[1])
            x = F.pad(x, [pw[0], pw[1], ph[0], ph[1]])
        elif padding == "EXPLICIT":
            e = node.attr["explicit_paddings"]
            x = F.pad(x, [e[2 * hw[1]], e[2 * hw[1] + 1], e[2 * hw[0]], e[2 * hw[0] + 1]])
        elif padding != "VALID":
            raise UnsupportedOp(f"{node.name}: Conv2D padding {padding!r}")
        y = F.conv2d(x, kernel, stride=s, dilation=d)
        return [_nchw_to_nhwc(y) if fmt == "NHWC" else y]

    @staticmethod
    def _maxpool(node, args):
        if node.attr.get("data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"{node.name}: MaxPool data_format {node.attr['data_format']}")
        k, s = node.attr["ksize"][1:3], node.attr["strides"][1:3]
        x = _nhwc_to_nchw(args[0])
        if node.attr.get("padding") == "SAME":
            ph, pw = _same_pads(x.shape[2], k[0], s[0], 1), _same_pads(x.shape[3], k[1], s[1], 1)
            x = F.pad(x, [pw[0], pw[1], ph[0], ph[1]], value=-math.inf)
        elif node.attr.get("padding") != "VALID":
            raise UnsupportedOp(f"{node.name}: MaxPool padding {node.attr.get('padding')!r}")
        return [_nchw_to_nhwc(F.max_pool2d(x, k, s))]

    @staticmethod
    def _concat(node, args):
        return [torch.cat(args[:-1], dim=int(args[-1]))]

    @staticmethod
    def _resize(node, args):
        h, w = (int(v) for v in args[1].tolist())
        return [_resize_bilinear_tf(args[0], h, w, node.attr.get("align_corners", False),
                                    node.attr.get("half_pixel_centers", False))]

    @staticmethod
    def _splitv(node, args):
        x, sizes, dim = args
        return list(torch.split(x, [int(v) for v in sizes.tolist()], dim=int(dim)))

    @staticmethod
    def _reshape(node, args):
        return [args[0].reshape([int(v) for v in args[1].tolist()])]

    @staticmethod
    def _sparse_to_dense(node, args):
        indices, shape, values, default = args
        out = torch.full([int(v) for v in shape.tolist()], default.item(), dtype=values.dtype)
        idx = indices.long().reshape(-1, 1) if indices.ndim < 2 else indices.long()
        vals = values.expand(idx.shape[0]) if values.ndim == 0 else values
        for i, v in zip(idx.tolist(), vals.tolist()):
            out[tuple(i)] = v
        return [out]

    @torch.no_grad()
    def run(self, feeds: dict[str, torch.Tensor], outputs: list[str] | None = None
            ) -> dict[str, torch.Tensor]:
        """Values of `outputs` (default: the signature outputs) for placeholder `feeds`."""
        cache: dict[str, list[torch.Tensor]] = {}
        for name, value in feeds.items():
            cache[name.split(":")[0]] = [value]

        def value_of(ref: str) -> torch.Tensor:
            name, _, idx = ref.partition(":")
            if name.startswith("^"):
                raise UnsupportedOp(f"control dependency {ref}")
            return evaluate(name)[int(idx) if idx else 0]

        def evaluate(name: str) -> list[torch.Tensor]:
            stack = [name]
            while stack:                                   # iterative: no recursion limit issues
                current = stack[-1]
                if current in cache:
                    stack.pop()
                    continue
                node = self.graph.nodes.get(current)
                if node is None:
                    raise TfjsFormatError(f"graph references unknown node {current}")
                if node.op == "Const":
                    cache[current] = [torch.from_numpy(np.array(self.graph.weights[current]))]
                    stack.pop()
                    continue
                if node.op == "Placeholder":
                    raise ValueError(f"placeholder {current} was not fed")
                pending = [i.split(":")[0] for i in node.inputs if i.split(":")[0] not in cache]
                if pending:
                    stack.extend(pending)
                    continue
                args = [value_of(i) for i in node.inputs]
                cache[current] = self._ops[node.op](node, args)
                stack.pop()
            return cache[name]

        return {ref: value_of(ref) for ref in (outputs or self.graph.outputs)}
