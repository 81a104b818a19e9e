"""The link profile, typed: what fsplit-profile measured per candidate (onboard and edge times,
payload bytes, fidelity) and on what (model hashes, codecs, machines, timing method).

The profiler writes it, the link monitor's cost model and fidelity floor read it, and its JSON file
(`fsplit-profile --out`) is what users pass as `profile_file`. The JSON keeps the layout of
fsplit-profile/1 files made before this module (batch sizes as string keys); reading one checks
every field the cost model needs and says which is missing and how to make a complete file."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fsplit_ros.modes import MODE_NAMES, MODES

FORMAT = "fsplit-profile/1"


class ProfileError(ValueError):
    """A profile file or dict that the cost model cannot use; the message says how to make one."""


@dataclass
class CandidateProfile:
    """One candidate (local, image, bottleneck, split@N): its costs as measured."""
    mode: str
    split_index: int | None = None
    bytes: float = 0.0                 # payload bytes per frame (mean over the sample frames)
    bytes_p95: float = 0.0
    onboard_ms: float | None = None    # robot: head / encoder + payload encoding (None: edge-only profile)
    offboard_ms: dict[int, float] = field(default_factory=dict)   # edge, per frame, by batch size
    fidelity: float | None = None      # held-out agreement with the unmodified model; None = unknown
    fidelity_source: str = ""
    layer: str = ""                    # split candidates: the last head unit, e.g. "blocks.5.0"
    compression: float | None = None   # split candidates: c_l at 8 bits
    shape: list[int] | None = None

    @property
    def offloads(self) -> bool:
        return MODES[self.mode].offloads

    def offboard_s(self, batch: int) -> float:
        """Per-frame edge time at the profiled batch size nearest `batch` (ties: the smaller)."""
        if not self.offboard_ms:
            raise ProfileError("this candidate has no edge times: profile the edge side too")
        key = min(self.offboard_ms, key=lambda b: (abs(b - batch), b))
        return self.offboard_ms[key] / 1e3

    def to_dict(self) -> dict:
        out = {"mode": self.mode, "split_index": self.split_index, "bytes": self.bytes, "bytes_p95": self.bytes_p95}
        if self.onboard_ms is not None:
            out["onboard_ms"] = self.onboard_ms
        if self.offboard_ms:
            out["offboard_ms"] = {str(b): v for b, v in sorted(self.offboard_ms.items())}
        if self.fidelity is not None:
            out.update(fidelity=self.fidelity, fidelity_source=self.fidelity_source)
        if self.layer:
            out.update(name=self.layer, compression=self.compression, shape=self.shape)
        return out

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "CandidateProfile":
        if not isinstance(d, dict) or d.get("mode") not in MODE_NAMES:
            raise ProfileError(f"candidate {name!r} has no known mode (one of {', '.join(MODE_NAMES)}): "
                               f"make the profile with fsplit-profile")
        try:
            offboard = {int(b): float(v) for b, v in (d.get("offboard_ms") or {}).items()}
            onboard = d.get("onboard_ms")
            return cls(mode=d["mode"], split_index=d.get("split_index"), bytes=float(d.get("bytes", 0.0)),
                       bytes_p95=float(d.get("bytes_p95", d.get("bytes", 0.0))),
                       onboard_ms=None if onboard is None else float(onboard), offboard_ms=offboard,
                       fidelity=None if d.get("fidelity") is None else float(d["fidelity"]),
                       fidelity_source=str(d.get("fidelity_source", "")), layer=str(d.get("name", "")),
                       compression=d.get("compression"), shape=d.get("shape"))
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"candidate {name!r}: {exc}") from None


@dataclass
class ProfileTiming:
    method: str = ""
    repeats: int = 0
    other_cpu_load: float | None = None   # share of the CPUs other processes used while timing
    cached: bool | None = None            # start-up profiles: whether it was good enough to cache


@dataclass
class LinkProfile:
    """Per-candidate costs of one deployment (backbone + weights + bottleneck + codecs)."""
    candidates: dict[str, CandidateProfile]
    backbone: str = ""
    model_hashes: dict[str, str] = field(default_factory=dict)
    input_size: int = 0
    tensor_codec: str = ""
    image_codec: str = ""               # "jpeg:95"
    image_resolution: str = "model"
    edge_models: list[str] = field(default_factory=list)   # further edge models in the edge times
    machine: dict = field(default_factory=dict)   # side -> host, cpu, threads, torch
    timing: ProfileTiming = field(default_factory=ProfileTiming)
    preprocess_ms: float | None = None
    command: str = ""

    def complete(self, source: str = "the profile") -> "LinkProfile":
        """Itself, once every candidate has onboard and edge times (what the cost model needs)."""
        for name, c in self.candidates.items():
            if c.onboard_ms is None or (c.offloads and not c.offboard_ms):
                raise ProfileError(f"{source}: candidate {name} lacks onboard or offboard times: profile "
                                   f"both sides (or merge a robot and an edge profile)")
            if not math.isfinite(c.onboard_ms) or c.onboard_ms < 0:
                raise ProfileError(f"{source}: candidate {name} has onboard time {c.onboard_ms} ms")
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, "backbone": self.backbone, "model_hashes": dict(self.model_hashes),
                "input_size": self.input_size, "tensor_codec": self.tensor_codec,
                "image_codec": self.image_codec, "image_resolution": self.image_resolution,
                "edge_models": list(self.edge_models), "machine": self.machine, "timing": dict(vars(self.timing)), "preprocess_ms": self.preprocess_ms,
                "command": self.command, "candidates": {n: c.to_dict() for n, c in self.candidates.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "LinkProfile":
        """A profile from its JSON form; only `candidates` is required (the rest describes it)."""
        if not isinstance(d, dict) or not isinstance(d.get("candidates"), dict):
            raise ProfileError("a profile needs a 'candidates' table: make one with fsplit-profile")
        timing = d.get("timing") or {}
        return cls(candidates={n: CandidateProfile.from_dict(n, c) for n, c in d["candidates"].items()},
                   backbone=str(d.get("backbone", "")), model_hashes=dict(d.get("model_hashes") or {}),
                   input_size=int(d.get("input_size") or 0), tensor_codec=str(d.get("tensor_codec", "")),
                   image_codec=str(d.get("image_codec", "")),
                   image_resolution=str(d.get("image_resolution", "model")),
                   edge_models=list(d.get("edge_models") or []), machine=dict(d.get("machine") or {}),
                   timing=ProfileTiming(str(timing.get("method", "")), int(timing.get("repeats", 0)),
                                        timing.get("other_cpu_load"), timing.get("cached")),
                   preprocess_ms=d.get("preprocess_ms"), command=str(d.get("command", "")))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, path: str | Path) -> "LinkProfile":
        """A profile file as written (one side's half profile is valid here: merge_profiles)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"cannot read the profile {path}: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ProfileError(f"{path} is not an {FORMAT} file: create one with fsplit-profile")
        try:
            return cls.from_dict(d)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None


def as_link_profile(profile: "LinkProfile | dict") -> LinkProfile:
    """A LinkProfile, or one built from its JSON dict (hand-written profiles, tests)."""
    return profile if isinstance(profile, LinkProfile) else LinkProfile.from_dict(profile)
