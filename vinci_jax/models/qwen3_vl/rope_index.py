"""3-D rotary position ids for Qwen3-VL, on the host in numpy (equal to transformers' `Qwen3VLModel.get_rope_index`).

For images the rule is Qwen2.5-VL's (text counts up on all axes; an image's tokens take (t, row, column) offsets
from the running position, which then jumps by max(rows, columns) / merge), so this reuses that implementation.
Videos differ: Qwen3-VL separates frames by timestamp text, so every frame is its own (t = 1) grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vinci_jax.models.qwen2_5_vl import rope_index as _qwen25
from vinci_jax.models.qwen2_5_vl.rope_index import text_position_ids

__all__ = ["get_rope_index", "split_video_frames", "text_position_ids"]


def split_video_frames(video_grid_thw: np.ndarray | None) -> np.ndarray | None:
    """[n, 3] video grids -> one (1, h, w) grid per temporal patch, as HF's Qwen3-VL does before indexing."""
    if video_grid_thw is None:
        return None
    grid = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
    frames = np.repeat(grid, grid[:, 0], axis=0)
    frames[:, 0] = 1
    return frames


def get_rope_index(
    *args: Any, video_grid_thw: np.ndarray | None = None, second_per_grid_ts: object = None, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Position ids [3, B, L] (int32) and rope deltas [B, 1] (int32): the Qwen2.5-VL version's arguments and rules
    (input_ids, image_grid_thw, attention_mask, ids, packed `segment_ids`), with every video frame its own t = 1
    grid, so the frames' spacing (`second_per_grid_ts`, `tokens_per_second`) plays no part."""
    del second_per_grid_ts
    return _qwen25.get_rope_index(*args, video_grid_thw=split_video_frames(video_grid_thw), **kwargs)
