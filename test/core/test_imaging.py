"""sensor_msgs/Image fields -> RGB (fsplit_ros.imaging.to_rgb8), ROS-free: every encoding users
meet converts to the right pixels (known values, computed independently of OpenCV where the
conversion is a formula), and every malformed frame is refused with one ImageEncodingError whose
`kind` names the problem, before anything large is allocated."""
from __future__ import annotations

import array

import numpy as np
import pytest

from peak_rss import growth_since, reset_peak, vm_kib

from fsplit_ros.imaging import MAX_ASPECT_RATIO, SUPPORTED_ENCODINGS, ImageEncodingError, to_rgb8

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)     # a small frame with distinct pixels


def _convert(encoding, pixels: np.ndarray, step_pad: int = 0, bigendian: bool = False, as_array=False):
    """Serialise `pixels` (HxWxC or HxW) the way a camera driver fills sensor_msgs/Image."""
    h, w = pixels.shape[:2]
    raw = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).reshape(h, -1).view(np.uint8)
    row = raw.shape[1]
    rows = np.zeros((h, row + step_pad), np.uint8)
    rows[:, :row] = raw
    rows[:, row:] = 0xAB                                      # padding garbage must be ignored
    data = rows.tobytes()
    if as_array:
        data = array.array("B", data)                        # what rclpy hands the callback
    return to_rgb8(encoding, h, w, row + step_pad, data, bigendian)


# --- colour encodings -----------------------------------------------------------------------

@pytest.mark.parametrize("step_pad", [0, 3, 64])
def test_rgb8_is_passed_through_and_padded_rows_work(step_pad):
    out = _convert("rgb8", RGB, step_pad, as_array=True)
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", ["bgr8", "8UC3"])
def test_bgr8_is_reordered(encoding):
    np.testing.assert_array_equal(_convert(encoding, RGB[..., ::-1].copy(), 5), RGB)


@pytest.mark.parametrize("encoding,order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_alpha_is_dropped(encoding, order):
    alpha = RNG.integers(0, 256, (5, 6, 1), dtype=np.uint8)
    pixels = np.concatenate([RGB[..., order], alpha], axis=2)
    np.testing.assert_array_equal(_convert(encoding, pixels, 4), RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_replicated_to_three_channels(encoding):
    gray = RGB[..., 0].copy()
    out = _convert(encoding, gray, 2)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


# --- 16-bit and float: the valid range is scaled to 0..255 ------------------------------------

@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_scales_min_max_to_8_bit_in_either_byte_order(encoding, bigendian):
    depth = np.array([[1000, 2000, 3000], [1000, 1510, 3000]], np.uint16)  # mm, like a depth camera
    out = _convert(encoding, depth, 2, bigendian)
    want = np.array([[0, 127, 255], [0, 65, 255]], np.uint8)    # (v - 1000) * 255 / 2000, truncated
    np.testing.assert_array_equal(out[..., 0], want)
    assert (out == out[..., :1]).all()


def test_16_bit_high_byte_matters():
    # 0x0100 and 0x0001 are 256 and 1 little-endian: read big-endian they swap order
    depth = np.array([[0x0100, 0x0001]], np.uint16)
    little = _convert("mono16", depth)[0, :, 0]
    raw = depth.astype("<u2").tobytes()
    big = to_rgb8("mono16", 1, 2, 4, raw, is_bigendian=True)[0, :, 0]
    assert list(little) == [255, 0] and list(big) == [0, 255]


def test_32fc1_ignores_nan_and_inf():
    depth = np.array([[0.5, np.nan, 2.5], [np.inf, 1.5, -np.inf]], np.float32)
    out = _convert("32FC1", depth, 4)[..., 0]
    np.testing.assert_array_equal(out, [[0, 0, 255], [0, 127, 0]])


def test_constant_and_all_invalid_depth_give_black_not_a_division_error():
    assert not _convert("16UC1", np.full((2, 2), 7, np.uint16)).any()
    assert not _convert("32FC1", np.full((2, 2), np.nan, np.float32)).any()


# --- YUV 4:2:2 (BT.601 limited range, as cv_bridge converts it) ------------------------------

def _bt601(y, u, v):
    r = 1.164 * (y - 16) + 1.596 * (v - 128)
    g = 1.164 * (y - 16) - 0.813 * (v - 128) - 0.391 * (u - 128)
    b = 1.164 * (y - 16) + 2.018 * (u - 128)
    return np.clip(np.round([r, g, b]), 0, 255)


YUV_SAMPLES = [(128, 128, 128), (16, 128, 128), (235, 128, 128), (81, 90, 240), (145, 54, 34), (41, 240, 110)]


@pytest.mark.parametrize("y,u,v", YUV_SAMPLES)
@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_colours(encoding, y, u, v):
    macro = [u, y, v, y] if encoding in ("yuv422", "uyvy") else [y, u, y, v]
    out = to_rgb8(encoding, 1, 2, 4, bytes(macro))
    for px in out[0]:
        assert np.abs(px.astype(int) - _bt601(y, u, v)).max() <= 1, (px, _bt601(y, u, v))


@pytest.mark.parametrize("encoding,macro", [("yuv422", [128, 50, 128, 200]), ("yuv422_yuy2", [50, 128, 200, 128])])
def test_yuv422_byte_order_puts_each_luma_on_its_pixel(encoding, macro):
    # ROS yuv422 is UYVY (U Y0 V Y1), yuv422_yuy2 is YUYV: the dark luma must land on pixel 0
    out = to_rgb8(encoding, 1, 2, 4, bytes(macro))
    assert out[0, 0, 0] < 60 < 200 < out[0, 1, 0]


def test_yuv422_with_padded_rows():
    row = bytes([128, 100, 128, 100] * 2)                    # 4 pixels of grey 100
    out = to_rgb8("yuv422", 2, 4, len(row) + 8, row + bytes(8) + row)
    assert (np.abs(out.astype(int) - _bt601(100, 128, 128)) <= 1).all()


# --- Bayer: the ROS pattern names the first 2x2 tile -------------------------------------------

@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaic_of_a_uniform_colour_demosaics_to_that_colour(pattern):
    colour = {"r": 200, "g": 100, "b": 50}
    mosaic = np.zeros((8, 10), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    out = _convert(f"bayer_{pattern}8", mosaic, 6)
    assert (out == [200, 100, 50]).all(axis=2).all(), out[:, :, 0]


def test_bayer_patterns_are_not_interchangeable():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255                                  # only the tile's top-left sensels lit
    reds = {p: int(_convert(f"bayer_{p}8", mosaic)[2:6, 2:6, 0].mean()) for p in ("rggb", "bggr")}
    assert reds["rggb"] == 255 and reds["bggr"] == 0, reds


def test_every_supported_encoding_converts_a_valid_frame():
    # one well-formed 4x6 frame per encoding: RGB uint8 of the right size comes out
    bytes_per_pixel = {"u1": 1, "u2": 2, "f4": 4}
    from fsplit_ros.imaging import _LAYOUT
    for encoding in SUPPORTED_ENCODINGS:
        dtype, channels = _LAYOUT[encoding]
        step = 6 * channels * bytes_per_pixel[dtype] + 2
        out = to_rgb8(encoding, 4, 6, step, RNG.integers(0, 256, 4 * step, dtype=np.uint8).tobytes())
        assert out.shape == (4, 6, 3) and out.dtype == np.uint8, encoding


# --- malformed frames: one error each, with its kind --------------------------------------------

GOOD = dict(encoding="rgb8", height=4, width=6, step=18, data=bytes(72))


@pytest.mark.parametrize("change,kind,match", [
    (dict(encoding="jpeg"), "encoding", "unsupported image encoding 'jpeg'"),
    (dict(encoding=""), "encoding", "unsupported"),
    (dict(height=0, data=b""), "empty", "empty image"),
    (dict(width=0, step=0), "empty", "empty image"),
    (dict(height=100_000, width=100_000, step=300_000), "too_large", "max_image_side"),
    (dict(height=2, width=8192, step=3 * 8192, data=bytes(2 * 3 * 8192)), "aspect", "aspect ratio"),
    (dict(step=17), "step", "step 17 is smaller"),
    (dict(step=0), "step", "smaller than a row"),
    (dict(data=bytes(71)), "short_data", "71 bytes"),
    (dict(data=b""), "short_data", "0 bytes"),
    (dict(step=2**31, data=bytes(1000)), "short_data", "needs"),
    (dict(encoding="yuv422", width=5, step=10, data=bytes(40)), "odd_width", "even width"),
    (dict(encoding="mono16", step=11, data=bytes(48)), "step", "12 bytes"),
])
def test_malformed_frames_are_refused_with_a_kind(change, kind, match):
    fields = {**GOOD, **change}
    with pytest.raises(ImageEncodingError, match=match) as info:
        to_rgb8(fields["encoding"], fields["height"], fields["width"], fields["step"], fields["data"])
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


def test_aspect_ratio_limit_is_inclusive_and_configurable():
    side = 4 * MAX_ASPECT_RATIO
    assert to_rgb8("mono8", 4, side, side, bytes(4 * side)).shape == (4, side, 3)
    with pytest.raises(ImageEncodingError):
        to_rgb8("mono8", 4, side + 1, side + 1, bytes(4 * (side + 1)))
    assert to_rgb8("mono8", 1, 100, 100, bytes(100), max_aspect=100).shape == (1, 100, 3)


def test_huge_declared_frames_are_refused_before_touching_the_data():
    # 60000x60000 rgba8 would be 14 GB; the check needs only the header fields
    with pytest.raises(ImageEncodingError) as info:
        to_rgb8("rgba8", 60_000, 60_000, 240_000, b"")
    assert info.value.kind == "too_large"


def test_extreme_aspect_ratio_frame_cannot_blow_up_preprocessing():
    """Regression: a 2x8192 frame (48 KB) used to be upscaled to 256x1M pixels by the centre crop
    (about 900 MB and seconds of CPU on the robot); it is now refused by to_rgb8 in microseconds,
    and the widest accepted ratio keeps the preprocessing allocation small."""
    from fsplit_ros.models.preprocess import resize_center_crop
    with pytest.raises(ImageEncodingError, match="aspect"):
        to_rgb8("rgb8", 2, 8192, 3 * 8192, bytes(2 * 3 * 8192))
    if not reset_peak():
        pytest.skip("needs Linux /proc/self/clear_refs")
    base = vm_kib("VmRSS")
    widest = to_rgb8("rgb8", 8, 8 * MAX_ASPECT_RATIO, 3 * 8 * MAX_ASPECT_RATIO, bytes(3 * 64 * MAX_ASPECT_RATIO))
    assert resize_center_crop(widest, 224, 0.875).shape == (224, 224, 3)
    growth_mib = growth_since(base)
    assert growth_mib < 32, f"preprocessing the widest accepted frame grew RSS by {growth_mib:.0f} MiB"
