"""Pixel-level image similarity: SSIM as scikit-image's `structural_similarity` computes it with its defaults.

UniSVG scores SSIM with scikit-image; the defaults are: a uniform 7x7 window (`scipy.ndimage.uniform_filter`,
reflected borders), sample covariance (variances and covariance scaled by 49/48), K1 = 0.01, K2 = 0.03, data range
255 for 8-bit pictures, the map's 3-pixel border cropped before the mean, and for colour pictures the mean over
channels (`channel_axis=-1`). Both pictures are composited on white and resized to SIZE x SIZE (336, UniSVG's
render size) with bicubic resampling first. Our own code (no scikit-image at run time); tests check it against
scikit-image to 1e-6.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 336
WIN_SIZE = 7
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0


def prepare(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """RGB uint8 array of `image` on white at size x size."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, np.uint8)


def ssim_arrays(x: np.ndarray, y: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """structural_similarity(x, y, data_range=..., channel_axis=-1 for 3-D arrays) with scikit-image's defaults."""
    from scipy.ndimage import uniform_filter

    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    if x.ndim == 3:
        return float(np.mean([ssim_arrays(x[..., c], y[..., c], data_range) for c in range(x.shape[-1])]))
    x, y = x.astype(np.float64), y.astype(np.float64)
    n = WIN_SIZE**2
    cov_norm = n / (n - 1)
    mx, my = uniform_filter(x, WIN_SIZE), uniform_filter(y, WIN_SIZE)
    vx = cov_norm * (uniform_filter(x * x, WIN_SIZE) - mx * mx)
    vy = cov_norm * (uniform_filter(y * y, WIN_SIZE) - my * my)
    vxy = cov_norm * (uniform_filter(x * y, WIN_SIZE) - mx * my)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (WIN_SIZE - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(a: Image.Image, b: Image.Image, size: int = SIZE) -> float:
    """SSIM of two pictures (RGB on white, size x size)."""
    return ssim_arrays(prepare(a, size), prepare(b, size))
