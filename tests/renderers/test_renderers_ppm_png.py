"""PPM stream -> PNG: the pixels PIL decodes are the PPM's, whatever the chunking; broken streams are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from renderers.ppm_png import PpmError, PpmToPng


def ppm(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    return f"P6\n{width} {height}\n255\n".encode() + pixels.astype(np.uint8).tobytes()


def encode(data: bytes, chunk: int, level: int = 1) -> bytes:
    encoder = PpmToPng(level)
    for i in range(0, len(data), chunk):
        encoder.feed(data[i : i + chunk])
    return encoder.finish()


@pytest.mark.parametrize("chunk", [1, 5, 31, 1 << 16])
def test_pixels_survive_any_chunking(chunk):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 11, 3))
    pixels[0, 0] = (10, 32, 13)  # bytes that look like whitespace right after the header
    with Image.open(io.BytesIO(encode(ppm(pixels), chunk))) as img:
        assert img.mode == "RGB" and img.size == (11, 7)
        assert np.array_equal(np.asarray(img), pixels)


def test_one_pixel_high_page_and_its_size():
    pixels = np.full((1, 5000, 3), 255)
    pixels[0, ::7] = (0, 0, 200)
    encoder = PpmToPng()
    encoder.feed(ppm(pixels))
    png = encoder.finish()
    assert encoder.size == (5000, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)


def test_flat_page_compresses_well():
    png = encode(ppm(np.full((400, 400, 3), 255)), 1 << 16)
    assert len(png) < 4000  # 480 kB of white


@pytest.mark.parametrize(
    "data, message",
    [
        (b"P5\n2 2\n255\n" + bytes(4), "not an 8-bit binary PPM"),  # greyscale
        (b"P6\n2 2\n65535\n" + bytes(24), "not an 8-bit binary PPM"),  # 16-bit
        (b"P6\n0 2\n255\n", "empty image"),
        (b"P6\n2 2\n255\n" + bytes(11), "truncated"),
        (b"P6\n2 2\n255\n" + bytes(13), "more pixel data"),
        (b"", "truncated"),
    ],
)
def test_broken_streams_are_refused(data, message):
    with pytest.raises(PpmError, match=message):
        encode(data, 3) if data else PpmToPng().finish()
