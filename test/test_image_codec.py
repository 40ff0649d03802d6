"""Tests for clipseg_ros.image_codec: real sensor_msgs messages and rosbags-like namespaces."""
import array
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from clipseg_ros import image_codec as ic
from clipseg_ros.image_codec import ImageDecodeError
from ros_helpers import png_bomb, png_chunk

# encoding -> (dtype, channels)
LAYOUTS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3), "8UC4": (np.uint8, 4),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "rgb16": (np.uint16, 3),
    "bgr16": (np.uint16, 3), "rgba16": (np.uint16, 4), "bgra16": (np.uint16, 4),
    "32FC1": (np.float32, 1),
    "bayer_rggb8": (np.uint8, 1), "bayer_bggr8": (np.uint8, 1), "bayer_gbrg8": (np.uint8, 1),
    "bayer_grbg8": (np.uint8, 1), "bayer_rggb16": (np.uint16, 1),
    "yuv422": (np.uint8, 2), "yuv422_yuy2": (np.uint8, 2),
}
# Encodings with a reference RGB conversion written in plain numpy below.
REFERENCE_ENCODINGS = [e for e in LAYOUTS if not e.startswith(("bayer", "yuv"))]
CONTAINERS = ("rclpy", "ns_numpy", "ns_bytes", "ns_unaligned")


def random_pixels(rng, encoding, h, w):
    dtype, ch = LAYOUTS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    if dtype == np.float32:
        return rng.uniform(-0.5, 1.5, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def raw_bytes(pixels, pad=0, bigendian=False, rng=None):
    """Serialize ``pixels`` by hand (independently of fill_image): rows of ``step`` bytes."""
    h = pixels.shape[0]
    order = ">" if bigendian else "<"
    a = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder(order))
    rows = a.reshape(h, -1).view(np.uint8)
    if pad:
        filler = (rng or np.random.default_rng(0)).integers(0, 256, (h, pad), dtype=np.uint8)
        rows = np.concatenate([rows, filler], axis=1)
    return rows.tobytes(), rows.shape[1]


def make_msg(container, encoding, pixels, pad=0, bigendian=False, rng=None, extra=0):
    data, step = raw_bytes(pixels, pad, bigendian, rng)
    data += b"\x07" * extra
    fields = dict(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                  is_bigendian=int(bigendian), step=step)
    if container == "rclpy":
        return Image(data=data, **fields)
    if container == "ns_numpy":
        return SimpleNamespace(data=np.frombuffer(data, np.uint8).copy(), **fields)
    if container == "ns_bytes":
        return SimpleNamespace(data=data, **fields)
    if container == "ns_unaligned":  # rosbags: a view at an odd offset into a bigger buffer
        big = np.frombuffer(b"\x00" + data + b"\x00\x00", np.uint8)
        return SimpleNamespace(data=big[1:1 + len(data)], **fields)
    raise AssertionError(container)


def reference_rgb(encoding, px):
    """What image_to_rgb should return, computed in plain numpy."""
    dtype, ch = LAYOUTS[encoding]
    if dtype == np.uint16:
        px = np.rint(px.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    elif dtype == np.float32:
        px = np.rint(np.clip(px, 0, 1).astype(np.float64) * 255.0).astype(np.uint8)
    if ch == 1:
        return np.repeat(px[:, :, None], 3, axis=2)
    if encoding.startswith("rgb"):
        return px[:, :, :3]
    return px[:, :, 2::-1]  # bgr / bgra / 8UC3 / 8UC4 / 16UC3


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("encoding", REFERENCE_ENCODINGS)
def test_image_to_rgb_matches_reference(encoding, container):
    rng = np.random.default_rng(1)
    px = random_pixels(rng, encoding, 5, 7)
    msg = make_msg(container, encoding, px, pad=3, rng=rng)
    rgb = ic.image_to_rgb(msg)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    tol = 1 if LAYOUTS[encoding][0] != np.uint8 else 0
    np.testing.assert_allclose(rgb.astype(int), reference_rgb(encoding, px).astype(int), atol=tol)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("encoding", sorted(LAYOUTS))
def test_image_to_array_returns_exact_pixels(encoding, container):
    rng = np.random.default_rng(2)
    px = random_pixels(rng, encoding, 4, 6)
    for pad in (0, 5):
        arr = ic.image_to_array(make_msg(container, encoding, px, pad=pad, rng=rng))
        assert arr.dtype == px.dtype and arr.dtype.isnative
        np.testing.assert_array_equal(arr, px)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.sampled_from(sorted(LAYOUTS)),
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    pad=st.integers(0, 9),
    bigendian=st.booleans(),
    container=st.sampled_from(CONTAINERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_decode_any_size_padding_and_byte_order(encoding, h, w, pad, bigendian, container, seed):
    if encoding.startswith("yuv"):
        w += w % 2  # 4:2:2 needs an even width
    rng = np.random.default_rng(seed)
    px = random_pixels(rng, encoding, h, w)
    msg = make_msg(container, encoding, px, pad=pad, bigendian=bigendian, rng=rng)
    arr = ic.image_to_array(msg)
    np.testing.assert_array_equal(arr, px)
    rgb = ic.image_to_rgb(msg)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    if encoding in REFERENCE_ENCODINGS:
        tol = 1 if px.dtype != np.uint8 else 0
        np.testing.assert_allclose(rgb.astype(int), reference_rgb(encoding, px).astype(int), atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "mono8", "mono16", "rgb16", "32FC1", "8UC3"]),
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    container=st.sampled_from(["rclpy", "ns_numpy", "ns_bytes"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_fill_then_decode_round_trip(encoding, h, w, container, seed):
    px = random_pixels(np.random.default_rng(seed), encoding, h, w)
    target = {
        "rclpy": Image(),
        "ns_numpy": SimpleNamespace(data=np.zeros(0, np.uint8)),
        "ns_bytes": SimpleNamespace(data=b""),
    }[container]
    msg = ic.fill_image(target, px, encoding)
    assert msg is target
    assert (msg.height, msg.width, msg.encoding) == (h, w, encoding)
    assert msg.step == w * px.dtype.itemsize * LAYOUTS[encoding][1]
    np.testing.assert_array_equal(ic.image_to_array(msg), px)


def test_rgb8_without_padding_is_zero_copy_and_with_padding_is_compact():
    px = np.random.default_rng(3).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    msg = make_msg("rclpy", "rgb8", px)
    rgb = ic.image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(rgb, px)
    # bytes data -> read-only view, still no copy
    ns = make_msg("ns_bytes", "rgb8", px)
    view = ic.image_to_rgb(ns)
    assert not view.flags.writeable and np.shares_memory(view, np.frombuffer(ns.data, np.uint8))
    padded = ic.image_to_rgb(make_msg("rclpy", "rgb8", px, pad=4))
    assert padded.flags.c_contiguous and padded.strides == (15, 3, 1)
    np.testing.assert_array_equal(padded, px)


def test_image_to_array_views_native_unpadded_data():
    px = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = make_msg("rclpy", "mono8", px)
    assert np.shares_memory(ic.image_to_array(msg), np.frombuffer(msg.data, np.uint8))
    labels16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    out = ic.image_to_array(make_msg("ns_numpy", "mono16", labels16, bigendian=True))
    assert out.dtype == np.dtype("=u2")
    np.testing.assert_array_equal(out, labels16)


def test_big_endian_mono16_to_rgb():
    px = np.array([[0, 65535, 257], [256, 1, 32896]], dtype=np.uint16)
    for be in (False, True):
        rgb = ic.image_to_rgb(make_msg("rclpy", "mono16", px, bigendian=be))
        np.testing.assert_array_equal(rgb[:, :, 0], [[0, 255, 1], [1, 0, 128]])
        assert (rgb[:, :, 0] == rgb[:, :, 2]).all()


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_demosaic_recovers_solid_color(pattern, bits):
    r, g, b = (200, 100, 50)
    if bits == 16:
        r, g, b = (r * 257, g * 257, b * 257)
    value = {"r": r, "g": g, "b": b}
    mosaic = np.zeros((8, 10), dtype=np.uint8 if bits == 8 else np.uint16)
    for (dy, dx), ch in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        mosaic[dy::2, dx::2] = value[ch]
    rgb = ic.image_to_rgb(make_msg("rclpy", f"bayer_{pattern}{bits}", mosaic, pad=2))
    assert rgb.shape == (8, 10, 3)
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to([200, 100, 50], (4, 6, 3)))


def test_yuv422_layouts_decode_to_the_same_image():
    rng = np.random.default_rng(4)
    h, w = 4, 6
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u = rng.integers(16, 240, (h, w // 2), dtype=np.uint8)
    v = rng.integers(16, 240, (h, w // 2), dtype=np.uint8)
    uyvy = np.empty((h, w, 2), np.uint8)
    yuyv = np.empty((h, w, 2), np.uint8)
    uyvy[:, :, 1] = y
    uyvy[:, 0::2, 0], uyvy[:, 1::2, 0] = u, v
    yuyv[:, :, 0] = y
    yuyv[:, 0::2, 1], yuyv[:, 1::2, 1] = u, v
    a = ic.image_to_rgb(make_msg("rclpy", "yuv422", uyvy))
    b = ic.image_to_rgb(make_msg("ns_numpy", "yuv422_yuy2", yuyv, pad=4))
    np.testing.assert_array_equal(a, b)
    gray = np.full((2, 2, 2), 128, np.uint8)  # Y=U=V=128: neutral gray
    g = ic.image_to_rgb(make_msg("rclpy", "yuv422", gray))
    assert (g == g[0, 0, 0]).all()


# ------------------------------------------------------------------------------------------
# invalid messages
# ------------------------------------------------------------------------------------------

def ns_image(**kw):
    fields = dict(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=bytes(18))
    fields.update(kw)
    return SimpleNamespace(**fields)


def test_decode_error_is_value_error():
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("fn", [ic.image_to_rgb, ic.image_to_array])
def test_unsupported_encoding_is_named(fn):
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'fancy42'"):
        fn(ns_image(encoding="fancy42"))
    with pytest.raises(ImageDecodeError, match="unsupported"):
        fn(ns_image(encoding=""))


def test_array_only_encoding_has_no_rgb_conversion():
    msg = ns_image(encoding="16SC1", step=6, data=bytes(12))
    assert ic.image_to_array(msg).dtype == np.int16
    with pytest.raises(ImageDecodeError, match="16SC1.*image_to_array"):
        ic.image_to_rgb(msg)


@pytest.mark.parametrize("container", ["rclpy", "ns"])
def test_truncated_data_names_byte_counts(container):
    if container == "rclpy":
        msg = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(17))
    else:
        msg = ns_image(data=np.zeros(10, np.uint8))
    got = 17 if container == "rclpy" else 10
    with pytest.raises(ImageDecodeError, match=rf"expected 18 bytes.*got {got}"):
        ic.image_to_rgb(msg)
    with pytest.raises(ImageDecodeError, match="truncated"):
        ic.image_to_array(msg)


@pytest.mark.parametrize("h,w", [(0, 3), (2, 0), (0, 0)])
def test_zero_size_rejected(h, w):
    with pytest.raises(ImageDecodeError, match="zero or negative size"):
        ic.image_to_rgb(ns_image(height=h, width=w, data=b""))


@pytest.mark.parametrize("h,w", [(1, ic.MAX_SIDE + 1), (ic.MAX_SIDE + 1, 1), (ic.MAX_SIDE, ic.MAX_SIDE),
                                 (2**31, 2**31)])
def test_absurd_dimensions_rejected(h, w):
    with pytest.raises(ImageDecodeError, match="absurd dimensions"):
        ic.image_to_rgb(ns_image(height=h, width=w, step=3 * w, data=b""))


def test_step_too_small_rejected():
    with pytest.raises(ImageDecodeError, match=r"step 8 is smaller than width\*bytes_per_pixel = 3\*3 = 9"):
        ic.image_to_rgb(ns_image(step=8))
    with pytest.raises(ImageDecodeError, match="step"):
        ic.image_to_array(ns_image(encoding="mono16", step=5, data=bytes(12)))


def test_odd_width_yuv_and_missing_data_rejected():
    with pytest.raises(ImageDecodeError, match="even"):
        ic.image_to_rgb(ns_image(encoding="yuv422", step=6, data=bytes(12)))
    with pytest.raises(ImageDecodeError, match="no data"):
        ic.image_to_rgb(ns_image(data=None))


def test_odd_step_for_16_bit_is_handled():
    px = np.array([[1, 2], [3, 65535]], dtype=np.uint16)
    msg = make_msg("rclpy", "mono16", px, pad=1)  # step 5: not a multiple of 2
    assert msg.step == 5
    np.testing.assert_array_equal(ic.image_to_array(msg), px)


# ------------------------------------------------------------------------------------------
# compressed images
# ------------------------------------------------------------------------------------------

def smooth_rgb(h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("container", ["rclpy", "ns_numpy"])
def test_jpeg_round_trip(container):
    img = smooth_rgb()
    fmt, payload = ic.encode_compressed(img, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8" and payload[:2] == b"\xff\xd8"
    msg = (CompressedImage(format=fmt, data=payload) if container == "rclpy"
           else SimpleNamespace(format=fmt, data=np.frombuffer(payload, np.uint8)))
    out = ic.compressed_to_rgb(msg)
    assert out.shape == img.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - img.astype(int))
    assert err.mean() < 2.0 and err.max() < 20  # colors are in RGB order, not swapped


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_color_order(fmt):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # pure red
    f, payload = ic.encode_compressed(img, fmt)
    out = ic.compressed_to_rgb(SimpleNamespace(format=f, data=payload))
    assert out[8, 8, 0] > 240 and out[8, 8, 2] < 10


def test_png_is_lossless_and_labels_come_back_unchanged():
    img = np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    fmt, payload = ic.encode_compressed(img, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(ic.compressed_to_rgb(CompressedImage(format=fmt, data=payload)), img)
    labels = np.random.default_rng(6).integers(0, 12, (9, 11), dtype=np.uint8)
    labels[0, 0] = 255
    fmt8, p8 = ic.encode_compressed(labels, "png")
    assert fmt8 == "mono8; png compressed mono8"
    back = ic.compressed_to_array(SimpleNamespace(format=fmt8, data=p8))
    assert back.dtype == np.uint8 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)
    depth = np.random.default_rng(7).integers(0, 65536, (5, 4), dtype=np.uint16)
    fmt16, p16 = ic.encode_compressed(depth, "png")
    assert fmt16 == "mono16; png compressed mono16"
    np.testing.assert_array_equal(ic.compressed_to_array(SimpleNamespace(format=fmt16, data=p16)), depth)


def test_compressed_depth_header_is_skipped():
    depth = np.arange(20, dtype=np.uint16).reshape(4, 5) * 100
    _, png = ic.encode_compressed(depth, "png")
    msg = SimpleNamespace(format="16UC1; compressedDepth png", data=bytes(12) + png)
    np.testing.assert_array_equal(ic.compressed_to_array(msg), depth)


def test_compressed_errors():
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        ic.compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0not a jpeg at all"))
    with pytest.raises(ImageDecodeError, match=r"format 'png', 5 bytes"):
        ic.compressed_to_array(SimpleNamespace(format="png", data=b"\x89PNG\x00"))
    with pytest.raises(ImageDecodeError, match="empty data"):
        ic.compressed_to_rgb(CompressedImage(format="jpeg"))
    with pytest.raises(ImageDecodeError, match="empty data"):
        ic.compressed_to_array(SimpleNamespace(format="png", data=np.zeros(0, np.uint8)))
    with pytest.raises(ImageDecodeError, match="header"):
        ic.compressed_to_array(SimpleNamespace(format="16UC1; compressedDepth png", data=bytes(5)))


@pytest.mark.parametrize("container", CONTAINERS)
def test_data_longer_than_step_times_height_is_rejected(container):
    """sensor_msgs/Image: data is step*height bytes; trailing bytes mean a wrong height/step."""
    px = np.random.default_rng(8).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for extra in (1, 7 * 3, 1000):
        msg = make_msg(container, "rgb8", px, pad=2, extra=extra)
        with pytest.raises(ImageDecodeError, match=rf"longer than step\*height.*{extra} trailing bytes"):
            ic.image_to_rgb(msg)
        with pytest.raises(ImageDecodeError, match="longer than step"):
            ic.image_to_array(msg)
    np.testing.assert_array_equal(ic.image_to_rgb(make_msg(container, "rgb8", px, pad=2)), px)


# ---- sizes from PNG / JPEG headers -----------------------------------------------------------

def jpeg_of(img, **params) -> bytes:
    flags = []
    for k, v in params.items():
        flags += [getattr(cv2, f"IMWRITE_JPEG_{k.upper()}"), v]
    ok, enc = cv2.imencode(".jpg", img, flags)
    assert ok
    return enc.tobytes()


def size_of(data: bytes, fmt: str = "jpeg"):
    return ic.compressed_size(SimpleNamespace(format=fmt, data=data))


def test_compressed_size_reads_png_and_jpeg_headers():
    img = smooth_rgb(37, 53)
    _, png = ic.encode_compressed(img, "png")
    assert size_of(png, "png") == (53, 37, "png")
    _, png16 = ic.encode_compressed(np.zeros((5, 9), np.uint16), "png")
    assert size_of(png16, "png") == (9, 5, "png")
    assert size_of(jpeg_of(img)) == (53, 37, "jpeg")                              # baseline SOF0
    assert size_of(jpeg_of(img, progressive=1)) == (53, 37, "jpeg")               # SOF2
    assert size_of(jpeg_of(img, rst_interval=1)) == (53, 37, "jpeg")          # with DRI
    # a CompressedImage whose format string disagrees with the payload: the payload decides
    assert size_of(png, "jpeg") == (53, 37, "png")
    # the depth image transport's 12-byte header is skipped
    _, dpng = ic.encode_compressed(np.zeros((6, 4), np.uint16), "png")
    assert size_of(bytes(12) + dpng, "16UC1; compressedDepth png") == (4, 6, "png")


def test_jpeg_header_walk_handles_fill_bytes_standalone_markers_and_tables():
    img = smooth_rgb(21, 34)
    jpg = jpeg_of(img)
    soi, rest = jpg[:2], jpg[2:]
    # fill bytes before a marker; TEM and RST markers have no length field; a DHT (c4), JPG (c8)
    # and DAC (cc) segment are not frame headers even though their codes sit among the SOFn
    dht = b"\xff\xc4" + struct.pack(">H", 2 + 17 + 1) + bytes([0x00] + [1] + [0] * 15) + b"\x00"
    dac = b"\xff\xcc" + struct.pack(">H", 4) + b"\x00\x11"
    jpgx = b"\xff\xc8" + struct.pack(">H", 4) + b"\x00\x00"
    com = b"\xff\xfe" + struct.pack(">H", 7) + b"hello"
    odd = soi + b"\xff\xff\xff" + b"\xff\x01" + b"\xff\xd3" + com + dht + dac + jpgx + b"\xff\xff" + rest
    assert size_of(odd) == (34, 21, "jpeg")
    # an extended-sequential / lossless / arithmetic SOF also counts (only the header is read)
    for code in (0xC1, 0xC3, 0xC9, 0xCF):
        sof = b"\xff" + bytes([code]) + struct.pack(">HBHHB", 11, 8, 300, 400, 1) + b"\x01\x11\x00"
        assert size_of(soi + com + sof) == (400, 300, "jpeg"), hex(code)


@pytest.mark.parametrize("data,reason", [
    (b"\xff\xd8", "ends after 2 bytes before a frame header"),
    (b"\xff\xd8\xff", "ends in fill bytes"),
    (b"\xff\xd8\x00\xff\xc0", "expected a marker at offset 2, found byte 0x00"),
    (b"\xff\xd8\xff\x00", "invalid marker ff00"),
    (b"\xff\xd8\xff\xd9", "EOI marker at offset 2 before any frame header"),
    (b"\xff\xd8\xff\xda\x00\x08", "SOS marker at offset 2 before any frame header"),
    (b"\xff\xd8\xff\xd8", "SOI marker at offset 2"),
    (b"\xff\xd8\xff\xe0\x00", "truncated inside the APP0 segment"),
    (b"\xff\xd8\xff\xe0\x00\x01", "APP0 segment at offset 2 has an invalid length 1"),
    (b"\xff\xd8\xff\xe1\x40\x00exif", "APP1 segment at offset 2 has length 16384, past the end"),
    (b"\xff\xd8\xff\xc0\x00\x05\x08\x00\x10", "SOF0 at offset 2 is too short"),
    (b"\xff\xd8\xff\xc0\x00\x08\x08\x00\x00\x00\x10\x01", "height 0 (set by a later DNL marker)"),
    (b"\xff\xd8\xff\xc2\x00\x08\x08\x00\x10\x00\x00\x01", "SOF2 gives width 0"),
    (b"\xff\xd9", "neither a PNG nor a JPEG"),
    (b"\x89PNG\r\n\x1a", "signature is incomplete"),
    (b"\x89PNX\r\n\x1a\n" + bytes(30), "signature is wrong"),
    (b"\x89PNG\r\n\x1a\n" + bytes(10), "truncated, 18 bytes"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IDAT", bytes(13)), "first chunk is b'IDAT', not IHDR"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bytes(14)), "IHDR chunk has length 14"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)),
     "invalid size 0x5"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 5, 8, 7, 0, 0, 0)),
     "invalid color type 7"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 5, 8, 0, 0, 0, 0))[:-1] + b"\x00",
     "IHDR CRC mismatch"),
    (b"GIF89a\x10\x00\x10\x00", "neither a PNG nor a JPEG"),
    (b"BM" + bytes(60), "neither a PNG nor a JPEG"),
])
def test_bad_headers_are_rejected_naming_the_problem(data, reason):
    for fn in (ic.compressed_size, ic.compressed_to_rgb, ic.compressed_to_array):
        with pytest.raises(ImageDecodeError) as exc:
            fn(SimpleNamespace(format="x", data=data))
        assert reason in str(exc.value), (fn.__name__, str(exc.value))
        assert "could not be decoded" in str(exc.value)


def test_truncated_real_files_are_rejected_before_decoding():
    img = smooth_rgb(40, 60)
    _, png = ic.encode_compressed(img, "png")
    jpg = jpeg_of(img)
    for data in (png[:20], png[:32]):
        with pytest.raises(ImageDecodeError, match="PNG header: truncated"):
            ic.compressed_to_rgb(SimpleNamespace(format="png", data=data))
    sof = jpg.index(b"\xff\xc0")
    for cut in (3, 10, sof, sof + 5):
        with pytest.raises(ImageDecodeError, match="JPEG header"):
            ic.compressed_to_rgb(SimpleNamespace(format="jpeg", data=jpg[:cut]))


def test_decompression_bomb_is_refused_from_its_header():
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 600_000
    msg = SimpleNamespace(format="png", data=bomb)
    for fn in (ic.compressed_size, ic.compressed_to_rgb, ic.compressed_to_array):
        t0 = time.perf_counter()
        with pytest.raises(ImageDecodeError, match=r"declares 20000x20000 \(400000000 pixels\) in its PNG "
                                                   r"header.*not decoded"):
            fn(msg)
        assert time.perf_counter() - t0 < 0.5      # decoding it would take seconds
    # over the pixel limit but within the side limit; a JPEG header claiming the same
    with pytest.raises(ImageDecodeError, match="declares 16384x16384"):
        ic.compressed_size(SimpleNamespace(format="png", data=b"\x89PNG\r\n\x1a\n" + png_chunk(
            b"IHDR", struct.pack(">IIBBBBB", 16384, 16384, 8, 0, 0, 0, 0))))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 20000, 20000, 1) + b"\x01\x11\x00"
    with pytest.raises(ImageDecodeError, match="declares 20000x20000.*JPEG header"):
        ic.compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8" + sof + b"\xff\xda"))
    # a small bomb-like PNG within the limits decodes to what it declares
    small = ic.compressed_to_array(SimpleNamespace(format="png", data=png_bomb(300, 200)))
    assert small.shape == (200, 300) and not small.any()


def test_encode_compressed_rejects_bad_input():
    with pytest.raises(ValueError, match="unsupported format"):
        ic.encode_compressed(smooth_rgb(), "webpx")
    with pytest.raises(ValueError, match="quality"):
        ic.encode_compressed(smooth_rgb(), "jpeg", quality=101)
    with pytest.raises(ValueError, match="cannot encode"):
        ic.encode_compressed(np.zeros((4, 4), np.uint16), "jpeg")
    with pytest.raises(ValueError, match="cannot encode"):
        ic.encode_compressed(np.zeros((4, 4, 3), np.float32), "png")


# ------------------------------------------------------------------------------------------
# fill_image / array_to_image
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype,encoding", [
    ((3, 4), np.uint8, "mono8"), ((3, 4, 1), np.uint8, "mono8"), ((3, 4, 3), np.uint8, "rgb8"),
    ((3, 4, 4), np.uint8, "rgba8"), ((3, 4), np.uint16, "mono16"), ((3, 4, 3), np.uint16, "rgb16"),
    ((3, 4), np.float32, "32FC1"), ((3, 4, 2), np.float32, "32FC2"), ((3, 4), np.int16, "16SC1"),
    ((3, 4), np.float64, "64FC1"), ((3, 4, 2), np.uint8, "8UC2"),
])
def test_fill_image_default_encodings(shape, dtype, encoding):
    px = (np.arange(np.prod(shape)) % 200).astype(dtype).reshape(shape)
    msg = ic.fill_image(Image(), px)
    assert msg.encoding == encoding and msg.is_bigendian == 0
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert msg.step == shape[1] * px.itemsize * (shape[2] if len(shape) == 3 else 1)
    np.testing.assert_array_equal(ic.image_to_array(msg), px.reshape(shape[:2]) if shape[-1:] == (1,) else px)


def test_fill_image_rclpy_with_field_checks_and_header():
    img = smooth_rgb(6, 8)
    msg = ic.fill_image(Image(check_fields=True), img, "rgb8")
    np.testing.assert_array_equal(ic.image_to_rgb(msg), img)
    hdr = Header(frame_id="camera")
    msg2 = ic.array_to_image(img[:, :, ::-1], "bgr8", header=hdr)  # non-contiguous input
    assert isinstance(msg2, Image) and msg2.header.frame_id == "camera"
    assert msg2.encoding == "bgr8" and msg2.step == 24
    np.testing.assert_array_equal(ic.image_to_rgb(msg2), img)
    msg3 = ic.array_to_image(img, msg_cls=SimpleNamespace)
    assert isinstance(msg3, SimpleNamespace) and msg3.encoding == "rgb8"


def test_fill_image_container_matches_target_and_copies():
    px = np.arange(6, dtype=np.uint8).reshape(2, 3)
    ns = ic.fill_image(SimpleNamespace(data=np.zeros(0, np.uint8)), px)
    assert isinstance(ns.data, np.ndarray) and ns.data.dtype == np.uint8 and ns.data.ndim == 1
    assert not np.shares_memory(ns.data, px)
    nb = ic.fill_image(SimpleNamespace(data=b""), px)
    assert isinstance(nb.data, bytes)
    empty = ic.fill_image(SimpleNamespace(), px)
    assert isinstance(empty.data, array.array)
    px[0, 0] = 99  # later changes to the source do not leak into the messages
    assert ns.data[0] == 0 and nb.data[0] == 0 and empty.data[0] == 0


def test_fill_image_big_endian_array():
    px = np.array([[1, 256], [65535, 4660]], dtype=">u2")
    msg = ic.fill_image(Image(), px)
    assert msg.is_bigendian == 1 and msg.encoding == "mono16"
    assert bytes(msg.data[:2]) == b"\x00\x01"
    np.testing.assert_array_equal(ic.image_to_array(msg), px.astype(np.uint16))


def test_fill_image_rejects_bad_input():
    with pytest.raises(ValueError, match="needs 3 channel"):
        ic.fill_image(Image(), np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="uint8"):
        ic.fill_image(Image(), np.zeros((2, 2), np.uint16), "mono8")
    with pytest.raises(ValueError, match="unsupported image encoding"):
        ic.fill_image(Image(), np.zeros((2, 2), np.uint8), "nope")
    with pytest.raises(ValueError, match="shape"):
        ic.fill_image(Image(), np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="size"):
        ic.fill_image(Image(), np.zeros((0, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        ic.fill_image(Image(), np.zeros((2, 2), np.complex64))


def test_supported_encodings_constant():
    required = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "8UC1", "8UC3",
                "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"}
    assert required <= ic.SUPPORTED_ENCODINGS <= ic.ARRAY_ENCODINGS
    assert ic.MAX_PIXELS == 64 * 1024 * 1024 and ic.MAX_SIDE == 16384


def test_module_import_does_not_import_ros():
    code = ("import sys, clipseg_ros.image_codec; "
            "bad = [m for m in ('rclpy', 'sensor_msgs', 'std_msgs') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))

