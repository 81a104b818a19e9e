"""The payload format: round trips, and every malformed class rejected with its typed error
before anything large is allocated."""
import struct

import pytest

from fsplit_ros.payload import (CorruptPayload, ForeignPayload, Limits, ModelMismatch,
                                OversizedPayload, PayloadError, PayloadHeader,
                                TruncatedPayload, UnknownCodec, UnsupportedVersion, pack_payload,
                                unpack_payload)
from fsplit_ros.payload.format import _FIXED

HASH = "1f" * 32


def _header(**kw):
    base = dict(mode="split", codec="uint8-channel+zlib", dtype="uint8", model_hash=HASH,
                split_index=6, shape=(1, 40, 28, 28), image_width=640, image_height=480)
    base.update(kw)
    return PayloadHeader(**base)


def test_round_trip_preserves_every_field():
    header = _header(quality=7)
    body = bytes(range(256)) * 10
    data = pack_payload(header, body)
    got, got_body = unpack_payload(data, {"split": HASH})
    assert got == header and bytes(got_body) == body


def _mutate(data: bytes, offset: int, fmt: str, value) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


VALID = pack_payload(_header(), b"\x01" * 100)
SHAPE_END = _FIXED.size + 4 * 4


@pytest.mark.parametrize("data,error", [
    (b"", ForeignPayload),
    (b"JUNKJUNKJUNK" * 10, ForeignPayload),
    (VALID[:20], TruncatedPayload),
    (VALID[:_FIXED.size + 3], TruncatedPayload),
    (VALID[:-1], TruncatedPayload),
    (VALID + b"\x00", CorruptPayload),
    (VALID[:-1] + b"\x02", CorruptPayload),                       # bit flip in the body
    (_mutate(VALID, 4, "<B", 9), UnsupportedVersion),
    (_mutate(VALID, 5, "<B", 77), UnknownCodec),                   # unknown mode
    (_mutate(VALID, 6, "<B", 99), UnknownCodec),                   # unknown codec
    (_mutate(VALID, 6, "<B", 20), UnknownCodec),                   # jpeg in split mode
    (_mutate(VALID, 52, "<B", 60), OversizedPayload),              # absurd ndim
    (_mutate(VALID, _FIXED.size, "<I", 2**31), OversizedPayload),  # a shape that would be GBs
    (_mutate(VALID, _FIXED.size + 4, "<I", 0), OversizedPayload),  # empty tensor
    (_mutate(VALID, 44, "<I", 100_000), OversizedPayload),         # absurd image size
    (_mutate(VALID, SHAPE_END, "<I", 2**31), TruncatedPayload),    # body length lies
])
def test_malformed_payloads_raise_typed_errors(data, error):
    with pytest.raises(error) as info:
        unpack_payload(data, {"split": HASH})
    assert isinstance(info.value, PayloadError) and str(info.value)


def test_foreign_model_is_rejected_by_hash():
    with pytest.raises(ModelMismatch, match="deploy the same weights"):
        unpack_payload(VALID, {"split": "ab" * 32})
    with pytest.raises(ModelMismatch, match="no model loaded for mode 'split'"):
        unpack_payload(VALID, {"image": HASH})


def test_payload_over_the_size_limit_is_rejected_before_parsing():
    with pytest.raises(OversizedPayload):
        unpack_payload(VALID, None, Limits(max_payload_bytes=64))


def test_pack_refuses_inconsistent_headers():
    with pytest.raises(UnknownCodec):
        pack_payload(_header(mode="image", codec="fp16"), b"")
    with pytest.raises(ValueError):
        pack_payload(_header(model_hash="abc"), b"")


