"""The interface every payload codec implements (after CompressAI's latent codecs): `encode`
returns the body bytes plus what the header must carry; `decode` inverts it given that header."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fsplit_ros.payload.format import PayloadHeader


@dataclass(frozen=True)
class Encoded:
    body: bytes
    shape: tuple[int, ...]
    dtype: str
    quality: int = 0


class Codec(Protocol):
    name: str    # codec id as in payload.format.CODECS
    mode: str    # "split", "bottleneck" or "image"

    def encode(self, x: Any) -> Encoded: ...

    def decode(self, body: memoryview, header: PayloadHeader) -> Any: ...
