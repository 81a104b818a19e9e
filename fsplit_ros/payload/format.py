"""Binary payload layout (little-endian), version 1.

    offset size  field
    0      4     magic b"FSPL"
    4      1     format version (1)
    5      1     mode id       (MODES)
    6      1     codec id      (CODECS)
    7      1     dtype id      (DTYPES) of the transmitted tensor
    8      32    model hash    (raw sha256 of the weights/tables the payload needs)
    40     2     split index   (int16; 0 for image mode)
    42     2     quality       (int16; codec knob, 0 when unused)
    44     4     image width   (uint32; original camera image)
    48     4     image height
    52     1     ndim
    53     4*n   shape         (uint32 each)
    ..     4     body length
    ..     4     body CRC32
    ..     body

Each payload decodes on its own. `unpack_payload` checks every field against `Limits` before the
body is touched, so a hostile peer cannot make the edge allocate more than the limits allow.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from fsplit_ros.modes import CODECS as CODEC_REGISTRY
from fsplit_ros.modes import MODES as MODE_REGISTRY
from fsplit_ros.payload.errors import (CorruptPayload, ForeignPayload, ModelMismatch, OversizedPayload,
                                       TruncatedPayload, UnknownCodec, UnsupportedVersion)

MAGIC = b"FSPL"
VERSION = 1
# Mode and codec ids: the registry's (fsplit_ros/modes.py).
MODES = {name: mode.wire_id for name, mode in MODE_REGISTRY.items() if mode.offloads}
CODECS = {name: codec.wire_id for name, codec in CODEC_REGISTRY.items()}
# Which codecs each mode may use: anything else is rejected as UnknownCodec.
MODE_CODECS = {name: set(MODE_REGISTRY[name].codec_names) for name in MODES}
DTYPES = {"uint8": (1, 1), "int8": (2, 1), "float16": (3, 2), "float32": (4, 4)}  # id, itemsize

_FIXED = struct.Struct("<4sBBBB32shhIIB")
_TAIL = struct.Struct("<II")
MAX_NDIM = 6
_MODE_NAMES = {v: k for k, v in MODES.items()}
_CODEC_NAMES = {v: k for k, v in CODECS.items()}
_DTYPE_NAMES = {v[0]: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class Limits:
    """Caps on everything a remote peer controls (defaults fit 4K frames and large split tensors)."""
    max_payload_bytes: int = 16 * 1024 * 1024
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_image_side: int = 8192


@dataclass(frozen=True)
class PayloadHeader:
    mode: str
    codec: str
    dtype: str
    model_hash: str              # hex
    split_index: int
    shape: tuple[int, ...]
    image_width: int
    image_height: int
    quality: int = 0
    version: int = field(default=VERSION)

    @property
    def tensor_bytes(self) -> int:
        n = DTYPES[self.dtype][1]
        for s in self.shape:
            n *= s
        return n


def pack_payload(header: PayloadHeader, body: bytes) -> bytes:
    if header.mode not in MODES or header.codec not in MODE_CODECS[header.mode]:
        raise UnknownCodec(f"cannot pack mode '{header.mode}' with codec '{header.codec}'")
    if len(header.shape) > MAX_NDIM:
        raise OversizedPayload(f"{len(header.shape)} dimensions > {MAX_NDIM}")
    hash_raw = bytes.fromhex(header.model_hash)
    if len(hash_raw) != 32:
        raise ValueError("model_hash must be a 64-character sha256 hex digest")
    fixed = _FIXED.pack(MAGIC, VERSION, MODES[header.mode], CODECS[header.codec],
                        DTYPES[header.dtype][0], hash_raw, header.split_index, header.quality,
                        header.image_width, header.image_height, len(header.shape))
    shape = struct.pack(f"<{len(header.shape)}I", *header.shape)
    return b"".join([fixed, shape, _TAIL.pack(len(body), zlib.crc32(body)), body])


def unpack_payload(data: bytes, expected_hashes: Mapping[str, str] | None = None,
                   limits: Limits = Limits()) -> tuple[PayloadHeader, memoryview]:
    """Parse and validate; returns the header and a zero-copy view of the body.

    `expected_hashes` maps each mode this end can decode to the model hash it has loaded.
    """
    data = memoryview(data)
    if len(data) > limits.max_payload_bytes:
        raise OversizedPayload(f"payload of {len(data)} bytes exceeds max_payload_bytes="
                               f"{limits.max_payload_bytes}")
    if len(data) < len(MAGIC) or bytes(data[:4]) != MAGIC:
        raise ForeignPayload("not an fsplit payload (bad magic): is the sender an fsplit_ros encoder?")
    if len(data) < _FIXED.size:
        raise TruncatedPayload(f"payload of {len(data)} bytes is shorter than the {_FIXED.size}-byte header")
    (_, version, mode_id, codec_id, dtype_id, hash_raw, split_index, quality, width, height,
     ndim) = _FIXED.unpack_from(data, 0)
    if version != VERSION:
        raise UnsupportedVersion(f"payload format version {version}, this decoder reads {VERSION}: "
                                 f"update fsplit_ros on both ends to the same release")
    mode, codec, dtype = _MODE_NAMES.get(mode_id), _CODEC_NAMES.get(codec_id), _DTYPE_NAMES.get(dtype_id)
    if mode is None or codec is None or dtype is None:
        raise UnknownCodec(f"unknown mode/codec/dtype ids {mode_id}/{codec_id}/{dtype_id}")
    if codec not in MODE_CODECS[mode]:
        raise UnknownCodec(f"codec '{codec}' is not valid in mode '{mode}'")
    if ndim > MAX_NDIM:
        raise OversizedPayload(f"{ndim} dimensions > {MAX_NDIM}")
    offset = _FIXED.size
    if len(data) < offset + 4 * ndim + _TAIL.size:
        raise TruncatedPayload("payload ends inside its header")
    shape = struct.unpack_from(f"<{ndim}I", data, offset)
    offset += 4 * ndim
    body_len, crc = _TAIL.unpack_from(data, offset)
    offset += _TAIL.size
    if width > limits.max_image_side or height > limits.max_image_side:
        raise OversizedPayload(f"image {width}x{height} exceeds max_image_side={limits.max_image_side}")
    header = PayloadHeader(mode=mode, codec=codec, dtype=dtype, model_hash=hash_raw.hex(),
                           split_index=split_index, shape=tuple(shape), image_width=width,
                           image_height=height, quality=quality, version=version)
    if any(s == 0 for s in shape) or header.tensor_bytes > limits.max_tensor_bytes:
        raise OversizedPayload(f"tensor shape {tuple(shape)} ({header.tensor_bytes} bytes) is empty or "
                               f"exceeds max_tensor_bytes={limits.max_tensor_bytes}")
    if len(data) - offset < body_len:
        raise TruncatedPayload(f"body is {len(data) - offset} bytes, header says {body_len}")
    if len(data) - offset > body_len:
        raise CorruptPayload(f"{len(data) - offset - body_len} trailing bytes after the body")
    body = data[offset:]
    if zlib.crc32(body) != crc:
        raise CorruptPayload("body checksum mismatch: the payload was damaged in transit")
    if expected_hashes is not None:
        want = expected_hashes.get(mode)
        if want is None:
            raise ModelMismatch(f"this end has no model loaded for mode '{mode}'")
        if header.model_hash != want:
            raise ModelMismatch(f"{mode} payload is for model {header.model_hash[:12]}, this end loaded "
                                f"{want[:12]}: deploy the same weights/checkpoint on robot and edge")
    return header, body
