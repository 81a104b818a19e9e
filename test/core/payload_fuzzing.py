"""Adversarial payloads for the edge decoder, shared by test/core/test_fuzz.py (a short hypothesis
run in CI) and bench/fuzz_payloads.py (the long run).

A `Corpus` holds real, valid payloads of every mode and codec (encoded from a real photo by the
robot's OnboardEncoder) plus payloads of another model. The hypothesis strategies below turn them
into hostile inputs: truncations, bit flips, header fields overwritten with extreme values, junk
appended, bodies replaced or mutated *with the CRC recomputed* (so the codecs themselves, rANS
included, see the garbage), absurd shapes that would allocate gigabytes, foreign models, and
plain random bytes. `outcome()` runs one through `EdgeDecoder.decode` and says what happened: a
typed rejection (the PayloadError kind) or "decoded" after checking that the decoded features
are exactly what the tail needs. Anything else (another exception type, a crash) is a bug.

Large random byte strings come from `random.Random(seed).randbytes` with the seed drawn by
hypothesis: drawing megabytes through hypothesis itself is slow, and the seed still makes every
example reproducible.
"""
from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

from fsplit_ros.payload import PayloadError, PayloadHeader, unpack_payload
from fsplit_ros.payload.format import _FIXED, _TAIL, CODECS, DTYPES, MAGIC, MODE_CODECS, MODES, VERSION
from fsplit_ros.runtime import EdgeDecoder, OnboardEncoder

# Values that break naive size arithmetic: zero, one, powers of two around int/uint limits.
EXTREME_U32 = [0, 1, 2, 3, 255, 256, 4096, 65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1]
EXTREME_I16 = [-32768, -1, 0, 1, 6, 255, 32767]


@dataclass
class Corpus:
    decoder: EdgeDecoder
    valid: dict[str, bytes]                    # label -> a valid payload for `decoder`
    foreign: dict[str, bytes]                  # label -> a valid payload for ANOTHER model
    foreign_rans: list[bytes] = field(default_factory=list)   # another bottleneck's bitstreams
    hashes: dict[str, str] = field(default_factory=dict)      # mode -> the decoder's model hash

    @property
    def labels(self) -> list[str]:
        return sorted(self.valid)


def _encode_all(encoder: OnboardEncoder, rgb, tensor_codecs, image_codecs) -> dict[str, bytes]:
    from fsplit_ros.codecs import ImageCodec, TensorCodec
    frame = encoder.prepare(rgb)
    out = {}
    default_split = encoder.split_index
    for name in tensor_codecs:
        encoder.tensor_codec = TensorCodec(name)
        out[f"split:{name}@{default_split}"] = encoder.encode(frame, "split")
    encoder.tensor_codec = TensorCodec("uint8-channel+zlib")
    for index in encoder.dep.compressive_split_indices():
        out[f"split:uint8-channel+zlib@{index}"] = encoder.encode(frame, "split", index)
    for name in image_codecs:
        encoder.image_codec = ImageCodec(name, 1 if name == "png" else 80)
        out[f"image:{name}"] = encoder.encode(frame, "image")
    if hasattr(encoder, "image_resolution"):        # the whole camera frame instead of the crop
        encoder.image_resolution, encoder.image_codec = "native", ImageCodec("jpeg", 80)
        out["image:jpeg@native"] = encoder.encode(frame, "image")
        encoder.image_resolution = "model"
    if encoder.entropy_codec is not None:
        out["bottleneck:rans-factorized"] = encoder.encode(frame, "bottleneck")
    return out


def build_corpus(deployment, other_deployment, rgb, other_bottleneck=None) -> Corpus:
    """Valid payloads of every mode/codec for `deployment` (with a bottleneck attached), and
    payloads of `other_deployment` (another backbone) and of `other_bottleneck` (same backbone
    and config, other weights: its bitstreams are well-formed but for other tables)."""
    from fsplit_ros.codecs import IMAGE_FORMATS, TENSOR_CODECS
    valid = _encode_all(OnboardEncoder(deployment), rgb, TENSOR_CODECS, IMAGE_FORMATS)
    foreign = {f"other-backbone/{k}": v for k, v in _encode_all(
        OnboardEncoder(other_deployment), rgb, ("uint8-channel+zlib", "fp16"), ("jpeg",)).items()}
    foreign_rans = []
    if other_bottleneck is not None:
        other = OnboardEncoder(deployment)
        other.entropy_codec = type(other.entropy_codec)(other_bottleneck)
        x = other.prepare(rgb).tensor
        for variant in (x, x.flip(-1), x * 0.5, torch.zeros_like(x)):
            foreign_rans.append(other.entropy_codec.encode(variant).body)
    return Corpus(EdgeDecoder(deployment), valid, foreign, foreign_rans, deployment.model_hashes())


# --- the outcome of one payload ---------------------------------------------------------------

def expected_features_shape(decoder: EdgeDecoder, header: PayloadHeader, tail_from: int) -> tuple:
    if header.mode == "image":
        return (1, 3, decoder.dep.input_size, decoder.dep.input_size)
    return tuple(decoder.dep.split_point(tail_from).shape)


def outcome(decoder: EdgeDecoder, data: bytes) -> str:
    """'decoded' or the PayloadError kind; raises AssertionError for a decode that returned
    something the tail cannot take, and lets every non-PayloadError exception through."""
    try:
        frame = decoder.decode(data)
    except PayloadError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return exc.kind
    want = expected_features_shape(decoder, frame.header, frame.tail_from)
    assert tuple(frame.features.shape) == want, f"decoded {tuple(frame.features.shape)}, tail takes {want}"
    assert frame.features.dtype == torch.float32, frame.features.dtype
    assert bool(torch.isfinite(frame.features).all()), "decoded features contain NaN/inf"
    return "decoded"


# --- raw packing (no validation: the point is to produce what pack_payload refuses) -------------

def raw_payload(*, magic=MAGIC, version=VERSION, mode_id=1, codec_id=15, dtype_id=1, hash_raw=bytes(32),
                split_index=0, quality=0, width=640, height=480, shape=(1,), ndim=None, body=b"",
                body_len=None, crc=None) -> bytes:
    ndim = len(shape) if ndim is None else ndim
    fixed = _FIXED.pack(magic, version, mode_id, codec_id, dtype_id, hash_raw, split_index, quality,
                        width, height, ndim)
    tail = _TAIL.pack(len(body) if body_len is None else body_len,
                      zlib.crc32(body) if crc is None else crc)
    return fixed + struct.pack(f"<{len(shape)}I", *shape) + tail + body


def split_payload(data: bytes):
    """(header, body bytes) of a valid payload."""
    header, body = unpack_payload(data)
    return header, bytes(body)


def repack(data: bytes, body: bytes, **overrides) -> bytes:
    """A valid payload's header around another body, with length and CRC recomputed."""
    header, _ = split_payload(data)
    fields = dict(mode_id=MODES[header.mode], codec_id=CODECS[header.codec], dtype_id=DTYPES[header.dtype][0],
                  hash_raw=bytes.fromhex(header.model_hash), split_index=header.split_index,
                  quality=header.quality, width=header.image_width, height=header.image_height,
                  shape=header.shape, body=body)
    fields.update(overrides)
    return raw_payload(**fields)


# --- hypothesis strategies: each draws (label, payload bytes) -----------------------------------

def _rng(seed: int) -> random.Random:
    return random.Random(seed)


seeds = st.integers(0, 2**32 - 1)


@st.composite
def truncated(draw, corpus: Corpus):
    label = draw(st.sampled_from(corpus.labels))
    data = corpus.valid[label]
    cut = draw(st.one_of(st.integers(0, 80), st.integers(0, len(data) - 1)))
    return f"truncated/{label}", data[:cut]


@st.composite
def bit_flipped(draw, corpus: Corpus):
    """1..16 bit flips anywhere; half the time only in the header (that is where sizes live)."""
    label = draw(st.sampled_from(corpus.labels))
    buf = bytearray(corpus.valid[label])
    header_end = _FIXED.size + 4 * buf[52] + _TAIL.size
    in_header = draw(st.booleans())
    rng = _rng(draw(seeds))
    for _ in range(draw(st.integers(1, 16))):
        pos = rng.randrange(4, header_end) if in_header else rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
    return f"bitflip/{label}", bytes(buf)


_FIELDS = {   # name -> (struct format, offset) in the fixed header
    "version": ("<B", 4), "mode": ("<B", 5), "codec": ("<B", 6), "dtype": ("<B", 7),
    "split_index": ("<h", 40), "quality": ("<h", 42), "width": ("<I", 44), "height": ("<I", 48),
    "ndim": ("<B", 52),
}


@st.composite
def header_field(draw, corpus: Corpus):
    """One header field (or a shape dim, the body length or the CRC) set to an extreme or random
    value; the CRC is recomputed half the time so the damage reaches the checks behind it."""
    label = draw(st.sampled_from(corpus.labels))
    buf = bytearray(corpus.valid[label])
    ndim = buf[52]
    targets = list(_FIELDS) + [f"dim{i}" for i in range(ndim)] + ["body_len", "crc"]
    target = draw(st.sampled_from(targets))
    if target in _FIELDS:
        fmt, offset = _FIELDS[target]
    elif target.startswith("dim"):
        fmt, offset = "<I", _FIXED.size + 4 * int(target[3:])
    else:
        fmt, offset = "<I", _FIXED.size + 4 * ndim + (0 if target == "body_len" else 4)
    if fmt == "<B":
        value = draw(st.integers(0, 255))
    elif fmt == "<h":
        value = draw(st.one_of(st.sampled_from(EXTREME_I16), st.integers(-32768, 32767)))
    else:
        value = draw(st.one_of(st.sampled_from(EXTREME_U32), st.integers(0, 2**32 - 1)))
    struct.pack_into(fmt, buf, offset, value)
    if target != "crc" and draw(st.booleans()):
        body_at = _FIXED.size + 4 * ndim + _TAIL.size
        struct.pack_into("<I", buf, body_at - 4, zlib.crc32(bytes(buf[body_at:])))
    return f"field:{target}/{label}", bytes(buf)


@st.composite
def appended(draw, corpus: Corpus):
    label = draw(st.sampled_from(corpus.labels))
    junk = _rng(draw(seeds)).randbytes(draw(st.integers(1, 4096)))
    return f"appended/{label}", corpus.valid[label] + junk


@st.composite
def garbage_body(draw, corpus: Corpus, labels: list[str] | None = None):
    """A valid header (right model hash, mode, codec, shape) around a random body with a correct
    length and CRC: only the codec stands between the garbage and the model."""
    label = draw(st.sampled_from(labels or corpus.labels))
    header, body = split_payload(corpus.valid[label])
    rng = _rng(draw(seeds))
    n = draw(st.one_of(st.integers(0, 64), st.integers(0, 2 * len(body)), st.just(len(body))))
    garbage = bytearray(rng.randbytes(n))
    if header.codec == "rans-factorized" and n >= 8 and draw(st.booleans()):
        # pass the cheap rANS checks (4-byte aligned, valid initial state) to reach the decoder
        garbage = garbage[: n - n % 4]
        garbage[:8] = rng.randrange(1 << 31, 1 << 64).to_bytes(8, "little")
    elif header.codec.endswith("zlib") and n >= 2 and draw(st.booleans()):
        garbage[:2] = b"\x78\x9c"   # a zlib header, so inflate gets past the first bytes
    elif header.mode == "image" and n >= 16 and draw(st.booleans()):
        garbage[:16] = body[:16]    # the real file signature and first header bytes
    return f"garbage/{label}", repack(corpus.valid[label], bytes(garbage))


@st.composite
def mutated_body(draw, corpus: Corpus, labels: list[str] | None = None):
    """The real body with bit flips, a cut, a spliced chunk or a byte run overwritten, CRC fixed:
    almost-valid streams are the hardest input for a decoder."""
    label = draw(st.sampled_from(labels or corpus.labels))
    _, body = split_payload(corpus.valid[label])
    buf = bytearray(body)
    rng = _rng(draw(seeds))
    how = draw(st.sampled_from(["flip", "cut", "splice", "overwrite", "duplicate"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 32))):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
    elif how == "cut":
        buf = buf[: rng.randrange(len(buf))] if rng.random() < 0.5 else buf[rng.randrange(len(buf)):]
    elif how == "splice":
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = rng.randbytes(rng.randrange(1, 512))
    elif how == "overwrite":
        pos = rng.randrange(len(buf))
        run = rng.randrange(1, 256)
        buf[pos:pos + run] = bytes([rng.choice([0, 0xFF, rng.randrange(256)])]) * min(run, len(buf) - pos)
    else:
        buf = buf + buf[: rng.randrange(len(buf))]
    return f"mutated:{how}/{label}", repack(corpus.valid[label], bytes(buf))


@st.composite
def absurd_shape(draw, corpus: Corpus):
    """Any valid mode/codec/dtype combination with a shape (and image size) that would allocate
    gigabytes if trusted, a tiny body and a correct CRC."""
    mode = draw(st.sampled_from(sorted(MODES)))
    codec = draw(st.sampled_from(sorted(MODE_CODECS[mode])))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    ndim = draw(st.integers(0, 6))
    rng = _rng(draw(seeds))

    def value():
        return rng.choice([rng.choice(EXTREME_U32), rng.randrange(2**32), rng.randrange(1, 4097)])
    shape = tuple(value() for _ in range(ndim))
    data = raw_payload(mode_id=MODES[mode], codec_id=CODECS[codec], dtype_id=DTYPES[dtype][0],
                       hash_raw=bytes.fromhex(corpus.hashes.get(mode, "00" * 32)),
                       split_index=rng.choice(EXTREME_I16), width=value(), height=value(),
                       shape=shape, body=rng.randbytes(rng.randrange(257)))
    return f"absurd/{mode}:{codec}", data


@st.composite
def foreign_model(draw, corpus: Corpus):
    """A valid payload of another backbone, as sent (its own hash) or relabelled with our hash (a
    robot that lies about its model), or another bottleneck's bitstream under our hash; each
    optionally with a few bits of its body flipped (CRC recomputed)."""
    choices = sorted(corpus.foreign) + [f"rans#{i}" for i in range(len(corpus.foreign_rans))]
    label = draw(st.sampled_from(choices))
    if label.startswith("rans#"):
        ours = next(k for k in corpus.labels if k.startswith("bottleneck"))
        data, tag = repack(corpus.valid[ours], corpus.foreign_rans[int(label[5:])]), "foreign"
    else:
        data, tag = corpus.foreign[label], "foreign"
        header, _ = split_payload(data)
        if header.mode in corpus.hashes and draw(st.booleans()):
            data = repack(data, split_payload(data)[1], hash_raw=bytes.fromhex(corpus.hashes[header.mode]))
            tag = "foreign-rehashed"
    flips = draw(st.integers(0, 8))
    if flips:
        body = bytearray(split_payload(data)[1])
        rng = _rng(draw(seeds))
        for _ in range(flips):
            pos = rng.randrange(len(body))
            body[pos] ^= 1 << rng.randrange(8)
        data, tag = repack(data, bytes(body)), tag + "-flipped"
    return f"{tag}/{label}", data


@st.composite
def random_bytes(draw):
    rng = _rng(draw(seeds))
    data = rng.randbytes(draw(st.integers(0, 2048)))
    if draw(st.booleans()):
        data = MAGIC + bytes([VERSION]) + data
    return "random", data


def any_payload(corpus: Corpus):
    return st.one_of(truncated(corpus), bit_flipped(corpus), header_field(corpus), appended(corpus),
                     garbage_body(corpus), mutated_body(corpus), absurd_shape(corpus),
                     foreign_model(corpus), random_bytes())
