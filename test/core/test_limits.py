"""Caps on what a remote peer controls, ROS-free: the configured Limits are what the edge enforces,
a refused mode is rejected before its body is decoded, and a camera frame with an absurd aspect
ratio cannot make the edge's centre crop allocate gigabytes. Plus the per-kind log throttle the
nodes use so that one kind of bad input cannot hide another."""
from __future__ import annotations

import dataclasses
import struct
import time
import zlib

import numpy as np
import pytest

from peak_rss import growth_since, reset_peak, vm_kib

from fsplit_ros.imaging import MAX_ASPECT_RATIO
from fsplit_ros.nodes.throttle import PerKindThrottle
from fsplit_ros.payload import (CorruptPayload, Limits, OversizedPayload, PayloadHeader, RefusedMode, ShapeMismatch,
                                pack_payload)
from fsplit_ros.runtime import EdgeDecoder, OnboardEncoder


@pytest.fixture(scope="module")
def frame(lite0, photos):
    return OnboardEncoder(lite0).prepare(photos[0][0])


def _png(width: int, height: int) -> bytes:
    """A valid black RGB PNG of any size, built without the pixel buffer (rows deflate to ~nothing)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = (b"\x00" + bytes(3 * width)) * height
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _native_image_payload(dep, width, height, body=None) -> bytes:
    header = PayloadHeader(mode="image", codec="png", dtype="uint8", model_hash=dep.model_hashes()["image"],
                           split_index=0, shape=(height, width, 3), image_width=width, image_height=height)
    return pack_payload(header, body if body is not None else _png(width, height))


def test_native_frame_with_absurd_aspect_ratio_is_rejected_before_decoding(lite0):
    """Regression: a 2x8192 'camera frame' PNG (a few hundred bytes) used to be decoded and
    upscaled by the centre crop to 256x1M pixels: ~1.6 GB and seconds of CPU on the edge."""
    payload = _native_image_payload(lite0, 8192, 2)
    assert len(payload) < 2048
    measurable = reset_peak()
    base = vm_kib("VmRSS")
    start = time.perf_counter()
    with pytest.raises(OversizedPayload, match="aspect ratio"):
        EdgeDecoder(lite0).decode(payload)
    assert time.perf_counter() - start < 0.5
    if measurable:
        assert growth_since(base) < 32


def test_native_frame_at_the_widest_accepted_ratio_decodes(lite0):
    width, height = 8 * MAX_ASPECT_RATIO, 8
    frame = EdgeDecoder(lite0).decode(_native_image_payload(lite0, width, height))
    assert tuple(frame.features.shape) == (1, 3, 224, 224) and frame.tail_from == 0


def test_native_frame_beyond_the_tensor_limit_is_oversized(lite0):
    # 5000x5000x3 = 75 MB decoded > max_tensor_bytes (64 MiB): refused from the header alone
    payload = _native_image_payload(lite0, 5000, 5000, body=b"\x89PNG not decoded")
    with pytest.raises(OversizedPayload, match="max_tensor_bytes"):
        EdgeDecoder(lite0).decode(payload)


@pytest.mark.parametrize("limits,match", [
    (Limits(max_payload_bytes=4096), "max_payload_bytes=4096"),
    (Limits(max_tensor_bytes=100_000), "max_tensor_bytes=100000"),
    (Limits(max_image_side=320), "max_image_side=320"),
])
def test_configured_limits_are_what_the_edge_enforces(lite0, frame, limits, match):
    """The decoder node passes its max_* parameters as Limits: each one is enforced by decode."""
    payload = OnboardEncoder(lite0).encode(frame, "image")       # 224x224x3 = 150 KB decoded, ~30 KB sent
    EdgeDecoder(lite0).decode(payload)                           # positive control: default limits
    with pytest.raises(OversizedPayload, match=match):
        EdgeDecoder(lite0, limits).decode(payload)


def test_refused_mode_is_rejected_before_its_body_is_decoded(lite0, frame):
    payload = OnboardEncoder(lite0).encode(frame, "image")
    decoder = EdgeDecoder(lite0, refused_modes={"image"})
    with pytest.raises(RefusedMode, match=r"image payloads are refused .*allow_image_mode=false") as info:
        decoder.decode(payload)
    assert info.value.kind == "refused"
    # other modes still decode; the refusal can be lifted at run time (a parameter change)
    decoder.decode(OnboardEncoder(lite0).encode(frame, "split"))
    decoder.refused_modes = frozenset()
    assert decoder.decode(payload).tail_from == 0


def test_refusal_comes_before_body_decoding(lite0, frame):
    # a refused mode with a garbage body is 'refused', not 'corrupt': the body is never touched
    header = PayloadHeader(mode="image", codec="jpeg", dtype="uint8", model_hash=lite0.model_hashes()["image"],
                           split_index=0, shape=(224, 224, 3), image_width=640, image_height=480)
    with pytest.raises(RefusedMode):
        EdgeDecoder(lite0, refused_modes={"image"}).decode(pack_payload(header, b"garbage"))


def test_shape_checks_still_apply_to_native_frames(lite0):
    header = PayloadHeader(mode="image", codec="png", dtype="uint8", model_hash=lite0.model_hashes()["image"],
                           split_index=0, shape=(100, 200, 3), image_width=640, image_height=480)
    with pytest.raises(ShapeMismatch):
        EdgeDecoder(lite0).decode(pack_payload(header, _png(200, 100)))


@pytest.mark.parametrize("codec", ["fp16", "uint8-tensor"])
def test_non_finite_split_tensors_are_corrupt(lite0, codec):
    """Regression (found by test_fuzz.py): a garbage fp16 body of the right length decoded to
    NaN/inf features, and a huge uint8 scale overflowed to inf; both reached the tail and turned
    every logit into NaN. They are CorruptPayload now."""
    point = lite0.split_point(lite0.compressive_split_indices()[0])
    n = int(np.prod(point.shape))
    if codec == "fp16":
        body = np.full(n, np.nan, "<f2").tobytes()
        dtype = "float16"
    else:
        body = np.array([0.0, 3e38], "<f4").tobytes() + bytes([255]) * n   # min 0, scale 3e38
        dtype = "uint8"
    header = PayloadHeader(mode="split", codec=codec, dtype=dtype, model_hash=lite0.model_hashes()["split"],
                           split_index=point.index, shape=point.shape, image_width=640, image_height=480)
    with pytest.raises(CorruptPayload, match="non-finite"):
        EdgeDecoder(lite0).decode(pack_payload(header, body))


def test_per_kind_throttle_logs_each_kind_once_per_period():
    now = [0.0]
    throttle = PerKindThrottle(period_s=10.0, clock=lambda: now[0])
    assert throttle.note("step") == ""            # first of its kind: log
    assert throttle.note("short_data") == ""      # another kind is not hidden by the first
    assert throttle.note("step") is None          # same kind within the period: quiet
    assert throttle.note("step") is None
    now[0] = 10.5
    assert throttle.note("step") == " [2 more since]"
    now[0] = 30.0
    assert throttle.note("step") == ""            # nothing was suppressed in between
    assert throttle.counts == {"step": 5, "short_data": 1}


def test_dataclass_limits_defaults_cover_4k_frames():
    limits = Limits()
    assert limits.max_image_side >= 3840 and limits.max_tensor_bytes >= 3840 * 2160 * 3
    assert dataclasses.replace(limits, max_payload_bytes=1).max_payload_bytes == 1
    assert np.prod([2160, 3840, 3]) < limits.max_tensor_bytes
