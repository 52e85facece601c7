"""Output guards shared by every language: a pixel budget and flat-colour (blank) detection."""

from __future__ import annotations

import io

from PIL import Image

DEFAULT_MAX_PIXELS = 83_000_000  # the released reward's limit


class ImageRejected(ValueError):
    """The produced picture cannot be used (unreadable or too large)."""


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG header, read before any pixel is decoded."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ImageRejected("the renderer produced no readable PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def check_png(png: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Validate `png` against the pixel budget and return whether it is blank (a single flat colour).

    Raises ImageRejected for unreadable or over-budget images. The size is checked from the header first so a
    decompression bomb is never decoded.
    """
    width, height = png_size(png)
    if width <= 0 or height <= 0:
        raise ImageRejected(f"the picture is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ImageRejected(f"the picture is {width}x{height} = {width * height} px, over the {max_pixels} px budget")
    try:
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            return is_blank(img)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageRejected(f"the renderer produced an unreadable PNG: {err}") from err


def is_blank(img: Image.Image) -> bool:
    """True when every pixel has the same colour once transparency is composited onto white."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    extrema = img.convert("RGB").getextrema()
    return all(lo == hi for lo, hi in extrema)


def to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
