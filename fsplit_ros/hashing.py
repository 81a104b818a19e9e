"""Content hashes that both ends of the link compute identically from what they loaded."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_hash(state: dict[str, "torch.Tensor"], *extra: str) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor (sorted by name), plus `extra`."""
    import torch   # here, so that file_sha256's users (fsplit-data) need not import torch

    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode())
        h.update(b"\0")
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
