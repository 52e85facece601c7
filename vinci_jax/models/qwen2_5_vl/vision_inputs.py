"""Host-side (numpy) preparation of Qwen2.5-VL vision inputs with static, bucketed shapes.

HF's vision tower computes its window permutation, attention boundaries and rotary positions from `image_grid_thw`
with data-dependent Python. Doing that here, on the host, and padding the patch count up to a bucket means the jitted
tower only ever sees arrays whose shapes depend on the bucket, not on the image sizes, so it compiles once per bucket.

Orders: patches enter the tower in HF's *window order* (HF permutes groups of merge_size**2 patches after the patch
embedding; the embedding is per patch, so permuting pixel rows first is the same). Padding patches sit at the end,
with segment id 0 in both attention layouts (they attend only to each other and never to real patches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vinci_jax.models.qwen2_5_vl.config import VisionConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionInputs:
    """Arrays for one call of the vision tower; every leaf's shape depends only on the bucket size B.

    pixel_values:       float [B, C*T*P*P] patches in window order, zero rows as padding
    window_segment_ids: int32 [B] one id (>= 1) per attention window, 0 on padding
    full_segment_ids:   int32 [B] one id (>= 1) per image frame (full-attention layers), 0 on padding
    position_ids:       int32 [B, 2] (row, column) of each patch in its image, for the 2-D rotary embedding
    reverse_index:      int32 [B / merge_size**2] merged-output row -> row of the window-ordered merged features;
                        rows >= num_merged_tokens point at padding
    num_merged_tokens:  int32 [] number of real merged tokens (an array, so it does not trigger recompiles)
    """

    pixel_values: Any
    window_segment_ids: Any
    full_segment_ids: Any
    position_ids: Any
    reverse_index: Any
    num_merged_tokens: Any

    @property
    def bucket_size(self) -> int:
        return int(self.pixel_values.shape[0])


def default_bucket_sizes(max_patches: int, smallest: int = 64) -> list[int]:
    """Powers of two times `smallest` up to the first one >= max_patches."""
    sizes = [smallest]
    while sizes[-1] < max_patches:
        sizes.append(sizes[-1] * 2)
    return sizes


def choose_bucket(num_patches: int, bucket_sizes: Sequence[int] | int | None, multiple: int) -> int:
    """The smallest bucket >= num_patches; buckets must be multiples of merge_size**2."""
    if bucket_sizes is None:
        bucket_sizes = default_bucket_sizes(num_patches)
    elif isinstance(bucket_sizes, int):
        bucket_sizes = [bucket_sizes]
    for size in sorted(bucket_sizes):
        if size >= num_patches:
            if size % multiple:
                raise ValueError(f"vision bucket size {size} is not a multiple of spatial_merge_size**2 = {multiple}")
            return int(size)
    raise ValueError(
        f"{num_patches} vision patches do not fit the largest bucket {max(bucket_sizes)} "
        f"(buckets {list(bucket_sizes)}); add a larger bucket or lower the image processor's max_pixels"
    )


def _window_order(t: int, h: int, w: int, merge: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """HF's window permutation of one image's merged units and the window id (0-based, local) of each, in order."""
    mh, mw = h // merge, w // merge
    index = np.arange(t * mh * mw).reshape(t, mh, mw)
    pad_h, pad_w = -mh % window, -mw % window
    padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-1)
    nwh, nww = padded.shape[1] // window, padded.shape[2] // window
    padded = padded.reshape(t, nwh, window, nww, window).transpose(0, 1, 3, 2, 4).reshape(t * nwh * nww, -1)
    window_of = np.broadcast_to(np.arange(padded.shape[0])[:, None], padded.shape)
    keep = padded >= 0
    return padded[keep], window_of[keep]


def _positions(t: int, h: int, w: int, merge: int) -> np.ndarray:
    """(row, column) of each patch in the processor's block-major order (merge x merge blocks), repeated per frame."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    rows = rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([rows, cols], axis=-1), (t, 1))


def prepare_vision_inputs(
    image_grid_thw: np.ndarray,
    pixel_values: np.ndarray,
    config: VisionConfig,
    *,
    bucket_sizes: Sequence[int] | int | None = None,
) -> VisionInputs:
    """Concatenated images -> bucket-padded, window-ordered `VisionInputs` (numpy; run on the host).

    image_grid_thw: [n, 3] (t, h, w) in patches per image; pixel_values: [sum t*h*w, C*T*P*P] as the image processor
    returns them; config: a VisionConfig (uses spatial_merge_size, window_size, patch_size); bucket_sizes: allowed
    padded patch counts (default: 64 * 2**k).
    """
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    pixels = np.asarray(pixel_values)
    merge = int(config.spatial_merge_size)
    unit = merge * merge
    window = int(config.window_size) // merge // int(config.patch_size)
    if len(grid) == 0:
        raise ValueError("prepare_vision_inputs got no images (image_grid_thw is empty); pass vision_inputs=None")
    if window < 1:
        raise ValueError(
            f"window_size {config.window_size} is smaller than one merged unit ({merge * config.patch_size})"
        )
    if np.any(grid <= 0) or np.any(grid[:, 1:] % merge):
        raise ValueError(f"image_grid_thw {grid.tolist()} must be positive with h, w divisible by {merge}")
    num_patches = int(np.sum(np.prod(grid, axis=1)))
    if pixels.ndim != 2 or pixels.shape[0] != num_patches:
        raise ValueError(
            f"pixel_values has shape {pixels.shape} but image_grid_thw {grid.tolist()} needs [{num_patches}, D]"
        )

    window_index, window_ids, full_ids, positions = [], [], [], []
    merged_offset = window_offset = 0
    for image, (t, h, w) in enumerate(grid.tolist()):
        order, local_window = _window_order(t, h, w, merge, window)
        window_index.append(order + merged_offset)
        # unique window ids per image; +1 keeps 0 free for padding (empty windows simply never occur)
        window_ids.append(np.repeat(local_window + window_offset + 1, unit))
        frame_of_unit = order // ((h // merge) * (w // merge))
        full_ids.append(np.repeat(frame_of_unit + 1 + int(np.sum(grid[:image, 0])), unit))
        pos = _positions(t, h, w, merge).reshape(-1, unit, 2)[order].reshape(-1, 2)
        positions.append(pos)
        merged_offset += t * (h // merge) * (w // merge)
        window_offset += int(local_window.max()) + 1

    window_index = np.concatenate(window_index)
    patch_order = (window_index[:, None] * unit + np.arange(unit)).reshape(-1)
    bucket = choose_bucket(num_patches, bucket_sizes, unit)
    pad = bucket - num_patches
    num_merged = num_patches // unit
    reverse = np.concatenate([np.argsort(window_index), np.arange(num_merged, bucket // unit)])
    return VisionInputs(
        pixel_values=np.pad(pixels[patch_order], ((0, pad), (0, 0))),
        window_segment_ids=np.pad(np.concatenate(window_ids), (0, pad)).astype(np.int32),
        full_segment_ids=np.pad(np.concatenate(full_ids), (0, pad)).astype(np.int32),
        position_ids=np.pad(np.concatenate(positions), ((0, pad), (0, 0))).astype(np.int32),
        reverse_index=reverse.astype(np.int32),
        num_merged_tokens=np.asarray(num_merged, dtype=np.int32),
    )
