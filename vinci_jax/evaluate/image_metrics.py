"""Pixel-level image similarity: SSIM (Wang et al. 2004) as UniSVG and the TikZ benchmarks use it.

SSIM here: both pictures composited on white, resized to SIZE x SIZE (336, UniSVG's protocol) with bicubic
resampling, Gaussian window sigma 1.5 truncated at 11 taps, K1 = 0.01, K2 = 0.03, L = 255, computed per RGB channel
on the valid region and averaged. Identical pictures score 1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 336
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_PAD = 5  # (11 - 1) / 2


def _prepare(image: Image.Image, size: int) -> np.ndarray:
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, np.float64)


def ssim(a: Image.Image, b: Image.Image, size: int = SIZE) -> float:
    from scipy.ndimage import gaussian_filter

    x, y = _prepare(a, size), _prepare(b, size)
    if np.array_equal(x, y):
        return 1.0
    values = []
    for c in range(3):
        xc, yc = x[..., c], y[..., c]
        blur = lambda v: gaussian_filter(v, sigma=1.5, truncate=3.5)  # noqa: E731 - 11 taps
        mx, my = blur(xc), blur(yc)
        sxx = blur(xc * xc) - mx * mx
        syy = blur(yc * yc) - my * my
        sxy = blur(xc * yc) - mx * my
        num = (2 * mx * my + _C1) * (2 * sxy + _C2)
        den = (mx * mx + my * my + _C1) * (sxx + syy + _C2)
        values.append((num / den)[_PAD:-_PAD, _PAD:-_PAD].mean())
    return float(np.clip(np.mean(values), -1.0, 1.0))
