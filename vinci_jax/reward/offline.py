"""The weight-free fallback similarity (config name "offline-msssim-hist", kept for old configs), for machines
without DINOv2 weights.

Why not plain SSIM + colour histograms (what this was): rendered code is mostly background, so a blank canvas
shares most pixels and most of the histogram with any target and scored ~0.73. This similarity is foreground-aware,
as metrics for drawings are: a pixel is foreground when some channel is darker than near-white (light page
backgrounds count as background). Per crop, at 112 x 112 (4x pooled):

- mask: soft Dice of the foreground masks, mean over 4 scales (56, 28, 14, 7 cells: coarse cells forgive shifts);
- edges: soft Dice of the luminance gradient magnitude, same scales (structure and text inside filled areas);
- colour: per 16 px and 32 px cell, the foreground colours' agreement weighted by the overlap of the two masks over
  their union (a colour-aware IoU: a blank render gets 0, a recoloured element loses its own area).

s = 0.05 + 0.95 (0.35 mask + 0.35 edges + 0.3 colour), in [0.05, 1]; two crops without foreground score 1. The
0.05 floor is credit for rendering at all: like DINOv2's (1 + cos) / 2, which is never near 0, it keeps any render
above a failed one (0), so GRPO still tells runnable code from a crash when the picture is far off. It is not a
cosine, so the released (1 + s) / 2 does not apply. `crop_mass` is how much foreground a crop pair holds: the
reward weights crops by it, so empty tiles (where a blank canvas is right) cannot carry a blank render. A structural
and colour proxy, not a semantic one: use it for smoke runs, CI and the demo, and DINOv2 to report results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SIDE = 112  # working resolution of a crop
LEVELS = (56, 28, 14, 7)  # pyramid of the mask and edge maps
COLOUR_LEVELS = (28, 14)  # cells of the foreground colour term
WEIGHTS = {"mask": 0.35, "edges": 0.35, "colour": 0.3}
RENDER_CREDIT = 0.05  # similarity of a render that shares nothing with its target (a failed render scores 0)
FG_LOW, FG_HIGH = 0.13, 0.25  # darkness (1 - min channel) where a pixel starts / ends being foreground
MASS_FLOOR = 0.02  # weight of a crop with no foreground in either image
_EPS = 1e-6

_PYRAMID = sum(n * n for n in LEVELS)
_COLOUR = sum(n * n * 3 for n in COLOUR_LEVELS)
OFFLINE_FEATURE_DIM = 2 * _PYRAMID + _COLOUR


def _pool(x: jax.Array, side: int) -> jax.Array:
    """[B, H, W, ...] -> [B, side, side, ...] by block means (H divisible by side)."""
    b, h, w = x.shape[:3]
    f = h // side
    return x.reshape(b, side, f, side, w // side, *x.shape[3:]).mean(axis=(2, 4))


def foreground(rgb: jax.Array) -> jax.Array:
    """Soft foreground mask in [0, 1] of float RGB in [0, 1] ([..., 3] -> [...])."""
    darkness = 1.0 - rgb.min(axis=-1)
    return jnp.clip((darkness - FG_LOW) / (FG_HIGH - FG_LOW), 0.0, 1.0)


def _edges(rgb: jax.Array) -> jax.Array:
    luma = rgb @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
    dx = jnp.abs(jnp.diff(luma, axis=2, append=luma[:, :, -1:]))
    dy = jnp.abs(jnp.diff(luma, axis=1, append=luma[:, -1:, :]))
    return jnp.clip(dx + dy, 0.0, 1.0)


def offline_features(crops: jax.Array) -> jax.Array:
    """uint8 [B, H, W, 3] -> [B, OFFLINE_FEATURE_DIM] float32 (H, W divisible by 112): mask and edge pyramids,
    then the mean foreground colour per colour cell."""
    b = crops.shape[0]
    rgb = _pool(crops.astype(jnp.float32) / 255.0, SIDE)  # [B, 112, 112, 3]
    mask = foreground(rgb)
    edges = _edges(rgb)
    parts = [_pool(mask, n).reshape(b, -1) for n in LEVELS]
    parts += [_pool(edges, n).reshape(b, -1) for n in LEVELS]
    for n in COLOUR_LEVELS:
        cover = _pool(mask, n)[..., None]
        colour = _pool(rgb * mask[..., None], n) / jnp.maximum(cover, _EPS)
        parts.append(colour.reshape(b, -1))
    return jnp.concatenate(parts, axis=-1)


def _split(features: jax.Array) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array]]:
    masks, edges, colours, start = [], [], [], 0
    for group in (masks, edges):
        for n in LEVELS:
            group.append(features[:, start : start + n * n])
            start += n * n
    for n in COLOUR_LEVELS:
        colours.append(features[:, start : start + n * n * 3].reshape(-1, n * n, 3))
        start += n * n * 3
    return masks, edges, colours


def _dice(a: jax.Array, b: jax.Array) -> jax.Array:
    """Soft Dice per row; 1 when both rows are empty."""
    inter = jnp.minimum(a, b).sum(-1)
    total = a.sum(-1) + b.sum(-1)
    return jnp.where(total > _EPS, 2.0 * inter / jnp.maximum(total, _EPS), 1.0)


def _coverage(masks: list[jax.Array], side: int) -> jax.Array:
    return masks[LEVELS.index(side)]


def offline_terms(fa: jax.Array, fb: jax.Array) -> dict[str, jax.Array]:
    """The three per-crop terms ([B] each, in [0, 1]) of two feature rows."""
    ma, ea, ca = _split(fa)
    mb, eb, cb = _split(fb)
    mask = jnp.mean(jnp.stack([_dice(a, b) for a, b in zip(ma, mb, strict=True)]), axis=0)
    edges = jnp.mean(jnp.stack([_dice(a, b) for a, b in zip(ea, eb, strict=True)]), axis=0)
    colour_levels = []
    for n, col_a, col_b in zip(COLOUR_LEVELS, ca, cb, strict=True):
        cov_a, cov_b = _coverage(ma, n), _coverage(mb, n)
        distance = jnp.sqrt(jnp.sum((col_a - col_b) ** 2, axis=-1) / 3.0)
        agree = jnp.exp(-((distance / 0.15) ** 2))
        union = jnp.maximum(cov_a, cov_b).sum(-1)
        hit = (jnp.minimum(cov_a, cov_b) * agree).sum(-1)
        colour_levels.append(jnp.where(union > _EPS, hit / jnp.maximum(union, _EPS), 1.0))
    colour = jnp.mean(jnp.stack(colour_levels), axis=0)
    return {"mask": mask, "edges": edges, "colour": colour}


def offline_similarity(fa: jax.Array, fb: jax.Array) -> jax.Array:
    """[B, D] x [B, D] -> [B] similarity in [0, 1] (1 for identical crops)."""
    terms = offline_terms(fa, fb)
    overlap = sum(WEIGHTS[name] * value for name, value in terms.items())
    return RENDER_CREDIT + (1.0 - RENDER_CREDIT) * overlap


def offline_crop_mass(fa: jax.Array, fb: jax.Array) -> jax.Array:
    """[B] weight of each crop pair: the larger foreground fraction of the two, plus a floor."""
    n = LEVELS[0] * LEVELS[0]
    return MASS_FLOOR + jnp.maximum(fa[:, :n].mean(-1), fb[:, :n].mean(-1))
