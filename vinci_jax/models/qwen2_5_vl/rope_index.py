"""3-D (temporal, height, width) rotary position ids for Qwen2.5-VL, on the host in numpy.

A port of transformers' `Qwen2_5_VLModel.get_rope_index`: text tokens count up by one on all three axes; the
tokens of one image take (t, row, column) positions offset by the running text position, after which the text
position jumps by max(rows, columns). Padding (attention_mask 0) gets position 0 and is skipped when counting.

Packed rows (`segment_ids`, 0 = padding, > 0 = sample id) restart positions at every sample, as if each sample were
its own row; images are consumed from `image_grid_thw` in row-major token order either way (the order in which the
model splices image features).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2


def _runs(types: np.ndarray) -> list[tuple[int, int, int]]:
    """(type, start, end) of each maximal run of equal token types."""
    if len(types) == 0:
        return []
    edges = np.flatnonzero(np.diff(types)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(types)]])
    return [(int(types[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _sample_positions(
    types: np.ndarray,
    grids: dict[int, Iterator[np.ndarray]],
    intervals: Iterator[float],
    merge: int,
    tokens_per_second: float,
    where: str,
) -> np.ndarray:
    """[3, n] positions of one sample's real tokens."""
    parts, current = [], 0
    for kind, start, end in _runs(types):
        length = end - start
        if kind == TEXT:
            parts.append(np.broadcast_to(np.arange(length) + current, (3, length)))
            current += length
            continue
        grid = next(grids[kind], None)
        if grid is None:
            name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
            raise ValueError(
                f"{where}: more runs of {'image' if kind == IMAGE else 'video'} tokens than rows in {name}"
            )
        t, h, w = (int(v) for v in grid)
        gh, gw = h // merge, w // merge
        if t * gh * gw != length:
            raise ValueError(
                f"{where}: a run of {length} vision tokens at {start} does not match grid (t={t}, h={h}, w={w}) "
                f"which needs {t * gh * gw}; check the image token expansion (adjacent images need separators)"
            )
        interval = tokens_per_second * next(intervals) if kind == VIDEO else 1
        tt, hh, ww = np.meshgrid(
            (np.arange(t) * interval).astype(np.int64), np.arange(gh), np.arange(gw), indexing="ij"
        )
        parts.append(np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]) + current)
        current += max(h, w) // merge
    if not parts:
        return np.zeros((3, 0), np.int64)
    return np.concatenate(parts, axis=1)


def get_rope_index(
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    *,
    image_token_id: int,
    video_token_id: int | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    segment_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Position ids [3, B, L] (int32) and rope deltas [B, 1] (int32), equal to HF's `get_rope_index`.

    The delta is `max position + 1 - number of real tokens`: a token decoded at cache index i (counting real
    tokens only) has position i + delta on all three axes. For packed rows it is the delta of the row's last sample.
    `attention_mask` and `segment_ids` are alternatives (segment_ids > 0 plays the role of the mask).
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
    batch, length = ids.shape
    if segment_ids is not None:
        segments = np.asarray(segment_ids).astype(np.int64)
    elif attention_mask is not None:
        segments = (np.asarray(attention_mask) != 0).astype(np.int64)
    else:
        segments = np.ones_like(ids, dtype=np.int64)
    if segments.shape != ids.shape:
        raise ValueError(f"mask/segment_ids shape {segments.shape} differs from input_ids shape {ids.shape}")

    types = np.where(ids == image_token_id, IMAGE, TEXT)
    if video_token_id is not None:
        types = np.where(ids == video_token_id, VIDEO, types)
    grids = {
        IMAGE: iter(np.asarray(image_grid_thw).reshape(-1, 3)) if image_grid_thw is not None else iter(()),
        VIDEO: iter(np.asarray(video_grid_thw).reshape(-1, 3)) if video_grid_thw is not None else iter(()),
    }
    intervals = iter(np.asarray(second_per_grid_ts).reshape(-1).tolist()) if second_per_grid_ts is not None else None
    if intervals is None:
        intervals = iter([1.0] * (batch * length + 1))

    positions = np.zeros((3, batch, length), np.int64)
    deltas = np.zeros((batch, 1), np.int64)
    for b in range(batch):
        row = segments[b]
        for seg in [s for s in dict.fromkeys(row.tolist()) if s > 0]:
            (where,) = np.nonzero(row == seg)
            pos = _sample_positions(
                types[b, where], grids, intervals, spatial_merge_size, tokens_per_second, f"row {b}, segment {seg}"
            )
            positions[:, b, where] = pos
            deltas[b, 0] = (pos.max() + 1 if pos.size else 0) - len(where)
    return positions.astype(np.int32), deltas.astype(np.int32)


def text_position_ids(next_positions: np.ndarray, length: int) -> np.ndarray:
    """[3, B, length] positions for `length` new text tokens per row starting at `next_positions` [B]."""
    start = np.asarray(next_positions).reshape(-1, 1)
    pos = start + np.arange(length)[None, :]
    return np.broadcast_to(pos[None], (3, *pos.shape)).astype(np.int32)
