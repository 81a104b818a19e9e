"""One checkpoint file holds everything the edge needs to decode: config, weights of g_a/g_s,
the entropy model's *quantized CDF tables* (never recomputed on load, so encoder and decoder can
never drift apart; CompressAI issues #279/#309), training metadata and a content hash."""
from __future__ import annotations

from pathlib import Path

import torch
from compressai.models.utils import update_registered_buffers

from fsplit_ros.bottleneck.network import BottleneckConfig, FrankenSplitBottleneck
from fsplit_ros.hashing import state_dict_hash

FORMAT = "fsplit-bottleneck/1"
_TABLES = ["_quantized_cdf", "_offset", "_cdf_length"]


class BottleneckCheckpointError(ValueError):
    """The file is not a usable fsplit bottleneck checkpoint; the message says why."""


# Config fields added after FORMAT's first release, with the value every earlier checkpoint has:
# hashed only when they differ from it, so adding an option never changes an existing file's hash.
_LATER_FIELDS = {"transform_stride": 1, "head_split": None, "head_channels": None,
                 "head_stride": None, "transform": "gdn", "decoder": "gdn",
                 "backbone_head": False}


def bottleneck_hash(model: FrankenSplitBottleneck) -> str:
    config = {k: v for k, v in model.config.to_dict().items()
              if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
    return state_dict_hash(model.state_dict(), FORMAT, repr(sorted(config.items())))


def save_bottleneck(model: FrankenSplitBottleneck, path: str | Path, metadata: dict | None = None) -> str:
    """Write the checkpoint (tables must exist: call update_tables() after training). Returns the hash."""
    if not model.has_tables():
        raise BottleneckCheckpointError("refusing to save a bottleneck without entropy tables: call "
                                        "update_tables() first")
    digest = bottleneck_hash(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": model.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "metadata": metadata or {}, "hash": digest}, tmp)
    tmp.replace(path)
    return digest


def load_bottleneck(path: str | Path) -> tuple[FrankenSplitBottleneck, dict]:
    """Load and verify a checkpoint. Returns (model in eval mode, {"hash", "metadata", "config"})."""
    path = Path(path)
    if not path.is_file():
        raise BottleneckCheckpointError(f"bottleneck checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise BottleneckCheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise BottleneckCheckpointError(f"{path} is not an {FORMAT} checkpoint")
    try:
        model = FrankenSplitBottleneck(BottleneckConfig(**blob["config"]))
        state = blob["state_dict"]
        # The tables are buffers of data-dependent size: resize ours to the saved ones, then load.
        update_registered_buffers(model.entropy_bottleneck, "entropy_bottleneck", _TABLES, state)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise BottleneckCheckpointError(f"{path} is corrupt or from an incompatible version: {exc}") from exc
    model.eval().requires_grad_(False)
    if not model.has_tables():
        raise BottleneckCheckpointError(f"{path} has no entropy tables")
    digest = bottleneck_hash(model)
    if digest != blob.get("hash"):
        raise BottleneckCheckpointError(f"{path} is corrupt: content hash {digest[:12]} does not "
                                        f"match the recorded {str(blob.get('hash'))[:12]}")
    return model, {"hash": digest, "metadata": blob.get("metadata", {}), "config": model.config.to_dict()}
