"""Bicubic resampling matrices that reproduce torch.nn.functional.interpolate(mode="bicubic", align_corners=False).

DINOv2 resizes its learned position-embedding grid to the input's patch grid. The sizes are static, so the resize
is a pair of constant matrices (out x in) applied on the device: `W_h @ grid @ W_w^T`. jax.image.resize uses a
Keys kernel with a=-0.5 and no border clamping, so it does not match torch; these matrices follow torch exactly:
- plain bicubic: source = scale * (dst + 0.5) - 0.5, 4 taps with A = -0.75, indices clamped to the border;
- antialias=True (used by HF's dinov2_with_registers): torch's separable AA filter, the PIL-style cubic with
  a = -0.5, support widened by the scale when downsampling, weights normalised to sum 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# torch computes coordinates and weights in float32 for float32 inputs; doing the same keeps these matrices within
# float32 rounding of torch's (a source coordinate near 36 carries ~4e-6 of float32 error otherwise).
_F32 = np.float32


def _cubic_near(x: np.float32, a: np.float32) -> np.float32:  # |x| <= 1
    return ((a + _F32(2.0)) * x - (a + _F32(3.0))) * x * x + _F32(1.0)


def _cubic_far(x: np.float32, a: np.float32) -> np.float32:  # 1 < |x| < 2
    return ((a * x - _F32(5.0) * a) * x + _F32(8.0) * a) * x - _F32(4.0) * a


def _bicubic_plain(in_size: int, out_size: int) -> np.ndarray:
    a, one, two, half = _F32(-0.75), _F32(1.0), _F32(2.0), _F32(0.5)
    scale = _F32(in_size) / _F32(out_size)
    weights = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        real = scale * (_F32(i) + half) - half
        base = math.floor(real)
        t = real - _F32(base)
        taps = (_cubic_far(t + one, a), _cubic_near(t, a), _cubic_near(one - t, a), _cubic_far(two - t, a))
        for k, w in enumerate(taps):
            weights[i, min(max(base - 1 + k, 0), in_size - 1)] += w
    return weights


_AA_A = np.float32(-0.5)  # torch (like PIL) uses a = -0.5 for the antialiased cubic


def _aa_filter(x: np.float32, a: np.float32 = _AA_A) -> np.float32:
    x = abs(x)
    if x < 1.0:
        return _cubic_near(x, a)
    if x < 2.0:
        return (((x - _F32(5.0)) * x + _F32(8.0)) * x - _F32(4.0)) * a
    return _F32(0.0)


def _bicubic_antialias(in_size: int, out_size: int) -> np.ndarray:
    half = _F32(0.5)
    scale = _F32(in_size) / _F32(out_size)
    support = _F32(2.0) * scale if scale >= 1.0 else _F32(2.0)
    invscale = _F32(1.0) / scale if scale >= 1.0 else _F32(1.0)
    weights = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (_F32(i) + half)
        xmin = max(int(center - support + half), 0)  # int() truncates toward zero, as torch's int64 cast
        xmax = min(int(center + support + half), in_size)
        row = [_aa_filter((_F32(j + xmin) - center + half) * invscale) for j in range(xmax - xmin)]
        total = _F32(0.0)
        for w in row:
            total = total + w
        weights[i, xmin:xmax] = [w / total if total != 0.0 else w for w in row]
    return weights


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
    """[out_size, in_size] float32 matrix M with `M @ x` == torch bicubic resize of x along that axis."""
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"bicubic resize needs positive sizes, got {in_size} -> {out_size}")
    matrix = _bicubic_antialias(in_size, out_size) if antialias else _bicubic_plain(in_size, out_size)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix
