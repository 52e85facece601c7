"""The weight-free fallback similarity ("offline-msssim-hist"), for machines without DINOv2 weights.

Per crop the feature is the luminance downsampled 4x (112 x 112 for 448 crops) followed by per-channel colour
histograms (3 x 32 bins, normalised). The similarity is 0.8 * mean over 3 scales of SSIM (Gaussian window,
sigma 1.5, clipped to [0, 1]) + 0.2 * histogram intersection. Identical crops score 1. It is a structural and colour
proxy, not a semantic one: use it for smoke runs and CI, not to report results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LUMA_SIDE = 112
HIST_BINS = 32
OFFLINE_FEATURE_DIM = LUMA_SIDE * LUMA_SIDE + 3 * HIST_BINS
SSIM_WEIGHT = 0.8
_SCALES = 3
_C1 = 0.01**2
_C2 = 0.03**2


def _gaussian_taps(size: int = 7, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def _pool(x: jax.Array, factor: int) -> jax.Array:
    b, h, w = x.shape[:3]
    return x.reshape(b, h // factor, factor, w // factor, factor, *x.shape[3:]).mean(axis=(2, 4))


def offline_features(crops: jax.Array) -> jax.Array:
    """uint8 [B, H, W, 3] -> [B, OFFLINE_FEATURE_DIM] float32 (H, W divisible by H / 112)."""
    b, h, w, _ = crops.shape
    x = crops.astype(jnp.float32) / 255.0
    small = _pool(x, h // LUMA_SIDE)  # [B, 112, 112, 3]
    luma = small @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
    bins = jnp.clip((small * HIST_BINS).astype(jnp.int32), 0, HIST_BINS - 1)  # [B, 112, 112, 3]
    onehot = jax.nn.one_hot(bins, HIST_BINS, dtype=jnp.float32)  # [B, 112, 112, 3, bins]
    hist = onehot.mean(axis=(1, 2)).reshape(b, 3 * HIST_BINS) / 3.0  # sums to 1 over the 3 channels
    return jnp.concatenate([luma.reshape(b, -1), hist], axis=-1)


def _blur(x: jax.Array) -> jax.Array:
    taps = jnp.asarray(_gaussian_taps())
    k = taps.shape[0]
    x = x[..., None]
    x = jax.lax.conv_general_dilated(
        x, taps.reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    x = jax.lax.conv_general_dilated(
        x, taps.reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return x[..., 0]


def _ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a**2
    var_b = _blur(b * b) - mu_b**2
    cov = _blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return jnp.mean(num / den, axis=(1, 2))


def offline_similarity(fa: jax.Array, fb: jax.Array) -> jax.Array:
    """[B, D] x [B, D] -> [B] similarity in [0, 1]."""
    n = LUMA_SIDE * LUMA_SIDE
    a = fa[:, :n].reshape(-1, LUMA_SIDE, LUMA_SIDE)
    b = fb[:, :n].reshape(-1, LUMA_SIDE, LUMA_SIDE)
    ssims = []
    for scale in range(_SCALES):
        if scale:
            a, b = _pool(a, 2), _pool(b, 2)
        ssims.append(jnp.clip(_ssim(a, b), 0.0, 1.0))
    ssim = jnp.mean(jnp.stack(ssims), axis=0)
    hist = jnp.sum(jnp.minimum(fa[:, n:], fb[:, n:]), axis=-1)
    return SSIM_WEIGHT * ssim + (1.0 - SSIM_WEIGHT) * hist
