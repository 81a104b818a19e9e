"""The interface every payload codec implements (after CompressAI's latent codecs): `encode`
returns the body bytes plus what the header must carry; `decode` inverts it given that header.
The registry of codec names and wire ids is fsplit_ros/modes.py; these are their implementations."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fsplit_ros.payload.format import PayloadHeader


@dataclass(frozen=True)
class Encoded:
    body: bytes
    shape: tuple[int, ...]
    dtype: str
    quality: int = 0


@runtime_checkable
class PayloadCodec(Protocol):
    name: str    # a codec name registered under `mode` in fsplit_ros/modes.py
    mode: str    # the mode whose payloads it encodes

    def encode(self, x: Any) -> Encoded: ...

    def decode(self, body: memoryview, header: PayloadHeader) -> Any: ...
