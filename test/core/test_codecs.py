"""Payload codecs on real data: every split-mode tensor codec on real activations of
EfficientNet-Lite0 (through a packed payload and back), the zlib-bomb guard, and the image codecs
on a real photo crop, including their typed rejections."""
import struct
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import torch

from peak_rss import peak_rss_growth_mib, reset_peak

from fsplit_ros.codecs import IMAGE_FORMATS, TENSOR_CODECS, ImageCodec, TensorCodec
from fsplit_ros.payload import (CorruptPayload, OversizedPayload, PayloadError, PayloadHeader,
                                ShapeMismatch, pack_payload, unpack_payload)
from fsplit_ros.runtime import EdgeDecoder, OnboardEncoder

HASH = "5a" * 32


@pytest.fixture(scope="module")
def frame(lite0, photos):
    return OnboardEncoder(lite0).prepare(photos[0][0])


@pytest.fixture(scope="module")
def activations(lite0, frame):
    """Split index -> the real head output of Lite0 at every compressive split point."""
    enc = OnboardEncoder(lite0)
    with torch.no_grad():
        return {i: enc.head(i)(frame.tensor) for i in lite0.compressive_split_indices()}


def _round_trip(codec: TensorCodec, x: torch.Tensor, split_index: int):
    """encode -> pack -> unpack (hash checked) -> decode; returns (decoded, encoded)."""
    enc = codec.encode(x)
    header = PayloadHeader(mode="split", codec=codec.name, dtype=enc.dtype, model_hash=HASH,
                           split_index=split_index, shape=enc.shape, image_width=640,
                           image_height=480, quality=enc.quality)
    got_header, body = unpack_payload(pack_payload(header, enc.body), {"split": HASH})
    assert got_header == header
    return codec.decode(body, got_header), enc


def _max_half_step(x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Half a quantisation step, broadcastable to x: (max - min) / 255 / 2 per group."""
    if per_channel:
        dims = [d for d in range(x.ndim) if d != 1]
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    else:
        lo, hi = x.min(), x.max()
    return (hi - lo) / 255.0 / 2.0


def test_activations_are_real_and_varied(activations, lite0):
    # Guard for the tests below: they need non-trivial tensors at every compressive split.
    assert sorted(activations) == lite0.compressive_split_indices() and len(activations) >= 3
    for i, x in activations.items():
        assert tuple(x.shape) == lite0.split_point(i).shape
        assert torch.isfinite(x).all() and x.std() > 0.01


@pytest.mark.parametrize("name", TENSOR_CODECS)
def test_tensor_codec_round_trip_through_payload(name, activations):
    codec = TensorCodec(name)
    for index, x in activations.items():
        dec, enc = _round_trip(codec, x, index)
        assert dec.dtype == torch.float32 and dec.shape == x.shape, (name, index)
        assert enc.shape == tuple(x.shape)
        if codec.base == "fp16":
            assert enc.dtype == "float16"
            # exactly what fp16 rounding gives: relative error at most 2^-11
            assert torch.equal(dec, x.half().float()), (name, index)
            torch.testing.assert_close(dec, x, rtol=2.0 ** -11, atol=1e-7)
        else:
            assert enc.dtype == "uint8"
            # per-channel scales only for spatial maps; flat vectors get one scale (see TensorCodec)
            bound = _max_half_step(x, per_channel=codec.base == "uint8-channel" and x.dim() >= 3)
            slack = 4 * torch.finfo(torch.float32).eps * x.abs().max()
            err = (dec - x).abs()
            assert (err <= bound * (1 + 1e-4) + slack).all(), \
                f"{name} at split {index}: error {float(err.max())} > half step"
            # and it really is quantised: at most 256 distinct values per group
            if codec.base == "uint8-tensor":
                assert dec.unique().numel() <= 256


@pytest.mark.parametrize("base", ["fp16", "uint8-tensor", "uint8-channel"])
def test_zlib_is_lossless_and_smaller_on_real_activations(base, activations):
    for index, x in activations.items():
        plain, plain_enc = _round_trip(TensorCodec(base), x, index)
        packed, zlib_enc = _round_trip(TensorCodec(base + "+zlib"), x, index)
        assert torch.equal(plain, packed), (base, index)
        assert zlib.decompress(zlib_enc.body) == plain_enc.body
        assert len(zlib_enc.body) < len(plain_enc.body), \
            f"{base}+zlib is not smaller than {base} at split {index}"


def test_per_channel_beats_per_tensor_on_spatial_activations(activations):
    # The reason per-channel quantisation exists: channels have very different ranges.
    for index, x in activations.items():
        if x.ndim < 4:
            continue
        per_t = (_round_trip(TensorCodec("uint8-tensor"), x, index)[0] - x).abs().mean()
        per_c = (_round_trip(TensorCodec("uint8-channel"), x, index)[0] - x).abs().mean()
        assert per_c < per_t, index


def test_unknown_tensor_codec_is_refused():
    with pytest.raises(ValueError, match="unknown tensor codec"):
        TensorCodec("bf16")


def test_constant_tensor_round_trips():
    x = torch.full((1, 8, 4, 4), 0.25)
    for name in TENSOR_CODECS:
        dec, _ = _round_trip(TensorCodec(name), x, 3)
        assert torch.allclose(dec, x, atol=1e-6), name


# --- zlib bomb ------------------------------------------------------------------------------

_CHUNK = 1 << 24   # 16 MiB of zeros per deflate block


@pytest.fixture(scope="module")
def zero_blocks():
    """Level-9 deflate of 16 MiB of zeros, cut at full flushes: the first block carries the zlib
    header, every later identical block is byte-identical, so a 1 GiB stream costs nothing to
    build (no 1 GiB buffer, no minutes of deflate)."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(_CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(_CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again
    return first, again


def _zlib_zeros(blocks, n_chunks: int) -> bytes:
    first, again = blocks
    total = n_chunks * _CHUNK
    adler = ((total % 65521) << 16) | 1          # adler32 of `total` zero bytes
    return first + again * (n_chunks - 1) + b"\x03\x00" + adler.to_bytes(4, "big")


def test_zlib_bomb_builder_is_a_valid_stream(zero_blocks):
    data = zlib.decompress(_zlib_zeros(zero_blocks, 2))
    assert len(data) == 2 * _CHUNK and not any(data)


@pytest.mark.parametrize("name", [n for n in TENSOR_CODECS if n.endswith("+zlib")])
def test_zlib_bomb_is_rejected_without_inflating_it(name, zero_blocks):
    body = _zlib_zeros(zero_blocks, 64)          # inflates to 1 GiB
    assert len(body) < 2 * 1024 * 1024
    dtype = "float16" if name.startswith("fp16") else "uint8"
    header = PayloadHeader(mode="split", codec=name, dtype=dtype, model_hash=HASH, split_index=5,
                           shape=(1, 40, 28, 28), image_width=640, image_height=480)
    got, view = unpack_payload(pack_payload(header, body), {"split": HASH})
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises((CorruptPayload, ShapeMismatch)):
            TensorCodec(name).decode(view, got)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5, f"bomb took {elapsed:.2f}s: it was inflated"
    assert peak < 16 * 1024 * 1024, f"decoding the bomb allocated {peak / 2**20:.0f} MiB"


def test_zlib_bomb_through_the_edge_decoder(lite0, zero_blocks):
    index = next(p.index for p in lite0.split_points if p.compressive and p.shape == (1, 40, 28, 28))
    header = PayloadHeader(mode="split", codec="uint8-channel+zlib", dtype="uint8",
                           model_hash=lite0.backbone.weights_hash, split_index=index,
                           shape=(1, 40, 28, 28), image_width=640, image_height=480)
    payload = pack_payload(header, _zlib_zeros(zero_blocks, 64))
    start = time.perf_counter()
    with pytest.raises(CorruptPayload, match="expected"):
        EdgeDecoder(lite0).decode(payload)
    assert time.perf_counter() - start < 1.0


def test_truncated_and_garbage_zlib_bodies_are_corrupt(activations):
    x = activations[min(activations)]
    enc = TensorCodec("uint8-channel+zlib").encode(x)
    header = PayloadHeader(mode="split", codec="uint8-channel+zlib", dtype="uint8", model_hash=HASH,
                           split_index=min(activations), shape=enc.shape, image_width=1,
                           image_height=1)
    for body in (enc.body[: len(enc.body) // 2], b"not zlib at all" * 10, b""):
        with pytest.raises(CorruptPayload):
            TensorCodec("uint8-channel+zlib").decode(memoryview(body), header)


def test_uncompressed_body_of_the_wrong_length_is_a_shape_mismatch(activations):
    x = activations[min(activations)]
    enc = TensorCodec("fp16").encode(x)
    header = PayloadHeader(mode="split", codec="fp16", dtype="float16", model_hash=HASH,
                           split_index=min(activations), shape=enc.shape, image_width=1,
                           image_height=1)
    with pytest.raises(ShapeMismatch):
        TensorCodec("fp16").decode(memoryview(enc.body[:-2]), header)


def test_non_finite_quantisation_parameters_are_corrupt():
    x = torch.randn(1, 4, 3, 3)
    enc = TensorCodec("uint8-tensor").encode(x)
    body = np.frombuffer(np.float32(np.nan).tobytes() + enc.body[4:], np.uint8).tobytes()
    header = PayloadHeader(mode="split", codec="uint8-tensor", dtype="uint8", model_hash=HASH,
                           split_index=1, shape=enc.shape, image_width=1, image_height=1)
    with pytest.raises(CorruptPayload, match="non-finite"):
        TensorCodec("uint8-tensor").decode(memoryview(body), header)


@pytest.mark.parametrize("codec,dtype,body_len", [
    ("uint8-tensor", "float32", 31360 * 4 + 8),   # expected = tensor_bytes(float32) + 8
    ("fp16", "uint8", 31360),                     # expected = tensor_bytes(uint8)
])
def test_header_dtype_inconsistent_with_codec_is_a_payload_error(codec, dtype, body_len):
    header = PayloadHeader(mode="split", codec=codec, dtype=dtype, model_hash=HASH, split_index=5,
                           shape=(1, 40, 28, 28), image_width=1, image_height=1)
    got, view = unpack_payload(pack_payload(header, bytes(body_len)), {"split": HASH})
    with pytest.raises(PayloadError):
        TensorCodec(codec).decode(view, got)


# --- image codecs ---------------------------------------------------------------------------

def _image_round_trip(codec: ImageCodec, rgb: np.ndarray):
    enc = codec.encode(rgb)
    header = PayloadHeader(mode="image", codec=codec.name, dtype=enc.dtype, model_hash=HASH,
                           split_index=0, shape=enc.shape, image_width=rgb.shape[1],
                           image_height=rgb.shape[0], quality=enc.quality)
    got, body = unpack_payload(pack_payload(header, enc.body), {"image": HASH})
    assert got.quality == codec.quality
    return codec.decode(body, got), enc, got


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("name,quality,min_psnr", [("jpeg", 95, 35.0), ("webp", 90, 32.0),
                                                   ("jpeg", 30, 26.0)])
def test_lossy_image_codecs_round_trip_a_real_crop(name, quality, min_psnr, frame):
    crop = frame.crop
    dec, enc, _ = _image_round_trip(ImageCodec(name, quality), crop)
    assert dec.shape == crop.shape and dec.dtype == np.uint8
    assert _psnr(dec, crop) > min_psnr
    assert len(enc.body) < crop.nbytes / 3, f"{name} q{quality} barely compresses"
    # the channel order survives (RGB in, RGB out): swapping R and B is far worse
    assert _psnr(dec, crop) > _psnr(dec[..., ::-1], crop) + 3


def test_lower_jpeg_quality_is_smaller(frame):
    sizes = [len(ImageCodec("jpeg", q).encode(frame.crop).body) for q in (30, 60, 95)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_png_is_lossless(frame):
    for level in (0, 9):
        dec, enc, _ = _image_round_trip(ImageCodec("png", level), frame.crop)
        assert np.array_equal(dec, frame.crop)
    assert set(IMAGE_FORMATS) == {"jpeg", "webp", "png"}


def test_image_codec_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown image codec"):
        ImageCodec("gif")
    with pytest.raises(ValueError, match="quality"):
        ImageCodec("jpeg", 0)


@pytest.mark.parametrize("name", sorted(IMAGE_FORMATS))
def test_corrupted_image_body_is_corrupt_payload(name, frame):
    codec = ImageCodec(name, 90 if name != "png" else 6)
    enc = codec.encode(frame.crop)
    header = PayloadHeader(mode="image", codec=name, dtype="uint8", model_hash=HASH, split_index=0,
                           shape=enc.shape, image_width=224, image_height=224)
    mangled = b"\x00" * 16 + enc.body[16:]       # the signature/magic is gone
    for body in (mangled, b"\xff" * 300, b"x"):
        with pytest.raises(CorruptPayload):
            codec.decode(memoryview(body), header)


@pytest.mark.parametrize("declared", [(112, 112, 3), (224, 223, 3), (224, 224, 1), (224, 224)])
def test_image_header_shape_disagreeing_with_the_image_is_shape_mismatch(declared, frame):
    enc = ImageCodec("png", 1).encode(frame.crop)
    header = PayloadHeader(mode="image", codec="png", dtype="uint8", model_hash=HASH, split_index=0,
                           shape=declared, image_width=224, image_height=224)
    with pytest.raises(ShapeMismatch):
        ImageCodec("png").decode(memoryview(enc.body), header)


def test_empty_image_body_is_corrupt_payload():
    header = PayloadHeader(mode="image", codec="jpeg", dtype="uint8", model_hash=HASH,
                           split_index=0, shape=(224, 224, 3), image_width=224, image_height=224)
    got, view = unpack_payload(pack_payload(header, b""), {"image": HASH})
    with pytest.raises(CorruptPayload):
        ImageCodec("jpeg").decode(view, got)


def _png_of_zeros(side: int) -> bytes:
    """A valid side x side RGB PNG of black pixels, deflated in chunks (small to build and send)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw_len, step = side * (1 + 3 * side), 1 << 22   # each row: filter byte 0 + zero pixels
    c, parts, zeros = zlib.compressobj(9), [], bytes(1 << 22)
    for start in range(0, raw_len, step):
        parts.append(c.compress(zeros[:min(step, raw_len - start)]))
    parts.append(c.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_png_bomb_builder_makes_a_real_png():
    img = cv2.imdecode(np.frombuffer(_png_of_zeros(300), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (300, 300, 3) and not img.any()


def test_peak_rss_measurement_sees_a_large_allocation():
    # Calibrates the measurement the bomb test relies on: a 64 MiB buffer (mmap-backed, like a
    # decoded 6000x6000 image) must show up, and a small one must not.
    if not reset_peak():
        pytest.skip("needs Linux /proc/self/clear_refs")
    assert peak_rss_growth_mib(lambda: np.ones(64 * 2 ** 20 // 8).sum()) > 48
    assert peak_rss_growth_mib(lambda: bytes(1024).count(0)) < 32


def test_image_decompression_bomb_is_rejected_before_decoding():
    if not reset_peak():
        pytest.skip("needs Linux /proc/self/clear_refs")
    body = _png_of_zeros(6000)                       # decodes to 108 MB
    assert len(body) < 256 * 1024
    header = PayloadHeader(mode="image", codec="png", dtype="uint8", model_hash=HASH,
                           split_index=0, shape=(224, 224, 3), image_width=224, image_height=224)
    got, view = unpack_payload(pack_payload(header, body), {"image": HASH})

    def decode():
        with pytest.raises((ShapeMismatch, OversizedPayload)):
            ImageCodec("png").decode(view, got)
    growth = peak_rss_growth_mib(decode)
    assert growth < 32, f"rejecting a {len(body)}-byte PNG grew the process by {growth:.0f} MiB"


def test_every_registered_codec_has_an_implementation_of_its_mode():
    """modes.py registers names and wire ids; codecs/ implements each one under the same mode."""
    from fsplit_ros.codecs import PayloadCodec
    from fsplit_ros.modes import MODES
    implementations = {"split": TensorCodec, "image": ImageCodec}
    for mode in ("split", "image"):
        for name in MODES[mode].codec_names:
            codec = implementations[mode](name)
            assert isinstance(codec, PayloadCodec) and codec.mode == mode and codec.name == name
    assert set(TENSOR_CODECS) == set(MODES["split"].codec_names)
    assert set(IMAGE_FORMATS) == set(MODES["image"].codec_names)
