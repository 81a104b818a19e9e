"""What a mode is and which codecs each one carries, defined once; every list of modes, parameter
choice, payload id and report order derives from here.

A payload names its mode and codec by number (payload/format.py): the numbers are this table's, so
an id is never reused for something else. Adding a mode or a codec means adding it here and its
implementation (runtime/onboard.py and runtime/offboard.py for a mode, codecs/ for a codec); the
payload format, the nodes' parameter choices, the link monitor and the reports pick it up.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Codec:
    name: str
    wire_id: int       # the payload's codec id (never reused)


@dataclass(frozen=True)
class Mode:
    name: str
    wire_id: int | None        # the payload's mode id; None: the mode sends no payload
    codecs: tuple[Codec, ...]  # what its payload may carry
    sends_pixels: bool         # camera pixels leave the robot (an edge may refuse that)
    summary: str
    per_split_point: bool = False   # one candidate per split point: "split@13"
    codec_parameter: str | None = None   # the encoder parameter choosing among `codecs` (None: one codec)

    @property
    def offloads(self) -> bool:
        """The edge finishes the model (a payload goes out)."""
        return self.wire_id is not None

    @property
    def codec_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.codecs)


_TENSOR = tuple(Codec(name, wire_id) for name, wire_id in (
    ("fp16", 10), ("fp16+zlib", 11), ("uint8-tensor", 12), ("uint8-tensor+zlib", 13),
    ("uint8-channel", 14), ("uint8-channel+zlib", 15)))

# In the order reports and plots list them: least to most sent.
MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("local", None, (), False, "the whole model runs onboard; nothing but results"),
    Mode("split", 1, _TENSOR, False, "a natural-bottleneck tensor of the unchanged model", per_split_point=True,
         codec_parameter="tensor_codec"),
    Mode("bottleneck", 2, (Codec("rans-factorized", 1),), False, "FrankenSplit's entropy-coded learned features"),
    Mode("image", 3, (Codec("jpeg", 20), Codec("webp", 21), Codec("png", 22)), True,
         "the model-input crop or the camera frame as an image file (full offload)",
         codec_parameter="image_codec"),
)}
MODE_NAMES: tuple[str, ...] = tuple(MODES)
OFFLOAD_MODES: tuple[str, ...] = tuple(name for name, mode in MODES.items() if mode.offloads)
# The one mode that sends nothing (the whole model onboard): the policy's fallback, always allowed.
[LOCAL] = [name for name, mode in MODES.items() if not mode.offloads]
PIXEL_MODES: frozenset[str] = frozenset(name for name, mode in MODES.items() if mode.sends_pixels)
CODECS: dict[str, Codec] = {c.name: c for mode in MODES.values() for c in mode.codecs}


def candidate_name(mode: str, split_index: int) -> str:
    """The one name of a candidate (profiles, link_state, timings, benchmarks): ('split', 13) ->
    'split@13'; modes with one candidate keep their name (their split_index is not part of it)."""
    known = MODES.get(mode)
    return f"{mode}@{split_index}" if known is not None and known.per_split_point else mode


def candidate_mode(name: str) -> tuple[str, int]:
    """'split@13' -> ('split', 13); 'bottleneck' -> ('bottleneck', 0)."""
    mode, _, index = name.partition("@")
    return mode, int(index) if index else 0


def mode_order(name: str) -> tuple[int, str]:
    """Sort key: registry order, unknown names (from other versions' bags) last."""
    return (MODE_NAMES.index(name) if name in MODES else len(MODE_NAMES), name)
