"""Host-side (numpy) preparation of the vision towers' inputs with static, bucketed shapes (both Qwen families).

HF's vision tower computes its window permutation, attention boundaries and rotary positions from `image_grid_thw`
with data-dependent Python. Doing that here, on the host, and padding up to buckets means the jitted tower only
sees arrays whose shapes depend on the bucket, not on the image sizes, so it compiles once per bucket.

Layout (chosen so attention never needs a mask over all patches of a batch):
- window slots: every attention window of HF's window permutation gets a slot of W = (window merged units)**2 *
  merge_size**2 patches; its patches come first in HF's order, the rest of the slot is padding. Window layers are
  then a batched attention over [num_slots, W] (cheap, independent of image size).
- rows: the slots of whole images are packed in order into rows of L patches (a multiple of W). Full-attention
  layers attend within one row, masked by image-frame segment ids, so cost is rows * L**2, not (all patches)**2.
By default there is one row whose length is the bucket; `row_patches` packs many images (e.g. a training batch)
into a bucketed number of fixed-length rows instead. Padding has segment id 0 and never mixes with real patches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

# Any vision config with patch_size, spatial_merge_size, window_size (Qwen2.5-VL's, or Qwen3-VL's whose window is
# one merged unit: the layout then keeps the processor's patch order).
VisionConfig = Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionInputs:
    """Arrays for one call of the vision tower; shapes depend only on (rows R, row length L, window slot W).

    pixel_values:       float [R, L, C*T*P*P] patches in slot layout, zero rows as padding
    full_segment_ids:   int32 [R, L] one id (>= 1) per image frame (full-attention layers), 0 on padding
    window_segment_ids: int32 [R*L/W, W] one id (>= 1) per window slot on its real patches, 0 on padding
    position_ids:       int32 [R, L, 2] (row, column) of each patch in its image, for the 2-D rotary embedding
    reverse_index:      int32 [R*L/merge_size**2] output row -> merged unit of the slot layout; rows
                        < num_merged_tokens are the images' merged tokens in HF order, later rows are padding
    num_merged_tokens:  int32 [] number of real merged tokens (an array, so it does not trigger recompiles)
    groups:             static G >= 1. With G > 1 the arrays are G equal blocks stacked along their first axis, one
                        per block of batch rows (the batch's data-parallel shards, see `stack_vision_groups`):
                        reverse_index holds each block's own unit indices and num_merged_tokens is [G]. Each shard
                        then runs the tower on its own rows' images only, and no host needs another host's pixels.
    """

    pixel_values: Any
    full_segment_ids: Any
    window_segment_ids: Any
    position_ids: Any
    reverse_index: Any
    num_merged_tokens: Any
    groups: int = dataclasses.field(default=1, metadata=dict(static=True))

    @property
    def bucket_size(self) -> int:
        """Padded patch count R * L."""
        return int(np.prod(self.full_segment_ids.shape))


def window_slot_patches(config: VisionConfig) -> int:
    """W: patches in one full attention window (window_size // patch_size // merge_size merged units a side)."""
    side = int(config.window_size) // int(config.spatial_merge_size) // int(config.patch_size)
    if side < 1:
        raise ValueError(
            f"window_size {config.window_size} is smaller than one merged unit "
            f"({config.spatial_merge_size * config.patch_size} pixels)"
        )
    return side * side * int(config.spatial_merge_size) ** 2


def _smallest_fit(need: int, sizes: Sequence[int], what: str, hint: str) -> int:
    for size in sorted(sizes):
        if size >= need:
            return int(size)
    raise ValueError(f"{need} {what} do not fit the largest bucket {max(sizes)} (buckets {list(sizes)}); {hint}")


def _powers_of_two_times(base: int, need: int) -> list[int]:
    sizes = [base]
    while sizes[-1] < need:
        sizes.append(sizes[-1] * 2)
    return sizes


def _window_order(t: int, h: int, w: int, merge: int, window: int) -> tuple[np.ndarray, np.ndarray, int]:
    """HF's window permutation of one image's merged units, each unit's window (0-based, local), and #windows.

    Padding the merged grid only up to a multiple of the window (HF pads one extra window when it already is a
    multiple) gives the same non-empty windows in the same order, and no empty ones.
    """
    mh, mw = h // merge, w // merge
    index = np.arange(t * mh * mw).reshape(t, mh, mw)
    padded = np.pad(index, ((0, 0), (0, -mh % window), (0, -mw % window)), constant_values=-1)
    nwh, nww = padded.shape[1] // window, padded.shape[2] // window
    padded = padded.reshape(t, nwh, window, nww, window).transpose(0, 1, 3, 2, 4).reshape(t * nwh * nww, -1)
    window_of = np.broadcast_to(np.arange(padded.shape[0])[:, None], padded.shape)
    keep = padded >= 0
    return padded[keep], window_of[keep], padded.shape[0]


def _positions(t: int, h: int, w: int, merge: int) -> np.ndarray:
    """(row, column) of each patch in the processor's block-major order (merge x merge blocks), repeated per frame."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    rows = rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([rows, cols], axis=-1), (t, 1))


def _row_starts(image_patches: Sequence[int], length: int) -> list[int]:
    """Flat start of each image when whole images are packed in order into rows of `length` patches."""
    starts, row, used = [], 0, 0
    for size in image_patches:
        if size > length:
            raise ValueError(f"an image needs {size} window-slot patches > row_patches {length}; raise row_patches")
        if used + size > length:
            row, used = row + 1, 0
        starts.append(row * length + used)
        used += size
    return starts


def image_slot_patches(image_grid_thw: np.ndarray, config: VisionConfig) -> list[int]:
    """Patches each image takes in the window-slot layout (its windows times the slot size W)."""
    merge, slot = int(config.spatial_merge_size), window_slot_patches(config)
    window = int(config.window_size) // merge // int(config.patch_size)
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    return [_window_order(t, h, w, merge, window)[2] * slot for t, h, w in grid.tolist()]


def rows_needed(slot_sizes: Sequence[int], row_patches: int) -> int:
    """Rows of `row_patches` that `prepare_vision_inputs(..., row_patches=)` fills with images of these
    `image_slot_patches` sizes, in order (0 if none)."""
    return _row_starts(slot_sizes, int(row_patches))[-1] // int(row_patches) + 1 if len(slot_sizes) else 0


def empty_vision_inputs(rows: int, row_patches: int, patch_dim: int, config: VisionConfig) -> VisionInputs:
    """All-padding inputs of the given shape: a batch shard without images still runs the tower (same shapes on
    every shard), and contributes no features."""
    slot, unit = window_slot_patches(config), int(config.spatial_merge_size) ** 2
    total = rows * row_patches
    return VisionInputs(
        pixel_values=np.zeros((rows, row_patches, patch_dim), np.float32),
        full_segment_ids=np.zeros((rows, row_patches), np.int32),
        window_segment_ids=np.zeros((total // slot, slot), np.int32),
        position_ids=np.zeros((rows, row_patches, 2), np.int32),
        reverse_index=np.arange(total // unit, dtype=np.int32),
        num_merged_tokens=np.asarray(0, np.int32),
    )


def stack_vision_groups(blocks: Sequence[VisionInputs]) -> VisionInputs:
    """One `VisionInputs` with `groups=len(blocks)` from per-shard blocks of equal shapes (see `VisionInputs`)."""
    shapes = {tuple(np.shape(leaf) for leaf in jax.tree.leaves(b)) for b in blocks}
    if len(shapes) != 1:
        raise ValueError(f"vision groups must share one shape (same rows and row length), got {sorted(shapes)}")
    groups = sum(int(b.groups) for b in blocks)
    merged = {
        f.name: np.concatenate([np.atleast_1d(np.asarray(getattr(b, f.name))) for b in blocks])
        for f in dataclasses.fields(VisionInputs)
        if f.name != "groups"
    }
    return VisionInputs(**merged, groups=groups)


def grouped_vision_inputs(
    images: Sequence[tuple[np.ndarray, np.ndarray] | None],
    config: VisionConfig,
    *,
    row_patches: int,
    rows: int,
    patch_dim: int,
) -> VisionInputs:
    """One block per batch shard from that shard's (image_grid_thw, pixel_values), or None for a shard without
    images; every block gets `rows` rows of `row_patches` (callers agree on them over all shards and hosts)."""
    blocks = [
        empty_vision_inputs(rows, row_patches, patch_dim, config)
        if block is None or len(np.asarray(block[0]).reshape(-1, 3)) == 0
        else prepare_vision_inputs(block[0], block[1], config, row_patches=row_patches, row_buckets=[rows])
        for block in images
    ]
    return stack_vision_groups(blocks)


def pad_vision_inputs(inputs: VisionInputs, rows: int, row_patches: int) -> VisionInputs:
    """The same images in a larger layout: every group padded to `rows` rows of `row_patches` patches (e.g. to
    stack micro-batches of one accumulation step). Real patches keep their row and offset; all else is padding."""
    groups = int(inputs.groups)
    pixels = np.asarray(inputs.pixel_values)
    old_rows, old_length = pixels.shape[0] // groups, pixels.shape[1]
    slot = np.asarray(inputs.window_segment_ids).shape[-1]
    unit = old_length * old_rows * groups // np.asarray(inputs.reverse_index).size
    if rows < old_rows or row_patches < old_length or row_patches % slot:
        raise ValueError(f"cannot pad vision rows {old_rows}x{old_length} to {rows}x{row_patches} (slot {slot})")

    def grow(x: np.ndarray, per_row: int, new_per_row: int) -> np.ndarray:
        """[G*R*per_row, ...] (row-major units of one kind) -> [G*rows*new_per_row, ...], zero padded."""
        x = np.asarray(x).reshape(groups, old_rows, per_row, *np.shape(x)[1:])
        pad = [(0, 0), (0, rows - old_rows), (0, new_per_row - per_row)] + [(0, 0)] * (x.ndim - 3)
        return np.pad(x, pad).reshape(groups * rows * new_per_row, *x.shape[3:])

    units, new_units = old_length // unit, row_patches // unit
    reverse = np.asarray(inputs.reverse_index).reshape(groups, -1)
    moved = (reverse // units) * new_units + reverse % units  # each real unit keeps its row and offset
    counts = np.atleast_1d(np.asarray(inputs.num_merged_tokens))
    new_reverse = []
    for g in range(groups):
        real = moved[g, : int(counts[g])]
        unused = np.setdiff1d(np.arange(rows * new_units), real)
        new_reverse.append(np.concatenate([real, unused]))
    return VisionInputs(
        pixel_values=grow(pixels.reshape(-1, pixels.shape[-1]), old_length, row_patches).reshape(
            groups * rows, row_patches, -1
        ),
        full_segment_ids=grow(np.asarray(inputs.full_segment_ids).reshape(-1), old_length, row_patches).reshape(
            groups * rows, row_patches
        ),
        window_segment_ids=grow(np.asarray(inputs.window_segment_ids), old_length // slot, row_patches // slot),
        position_ids=grow(np.asarray(inputs.position_ids).reshape(-1, 2), old_length, row_patches).reshape(
            groups * rows, row_patches, 2
        ),
        reverse_index=np.concatenate(new_reverse).astype(np.int32),
        num_merged_tokens=inputs.num_merged_tokens,
        groups=groups,
    )


def blank_like(inputs: VisionInputs) -> VisionInputs:
    """All-padding inputs with the layout of `inputs` (a micro-batch without images beside ones with images)."""
    groups = int(inputs.groups)
    units = np.asarray(inputs.reverse_index).size // groups
    return VisionInputs(
        pixel_values=np.zeros_like(inputs.pixel_values),
        full_segment_ids=np.zeros_like(inputs.full_segment_ids),
        window_segment_ids=np.zeros_like(inputs.window_segment_ids),
        position_ids=np.zeros_like(inputs.position_ids),
        reverse_index=np.tile(np.arange(units, dtype=np.int32), groups),
        num_merged_tokens=np.zeros_like(inputs.num_merged_tokens),
        groups=groups,
    )


def global_reverse_index(inputs: VisionInputs, num_units: int) -> jax.Array:
    """The tower's gather index over all `num_units` merged units: each group's own indices shifted to its block."""
    import jax.numpy as jnp

    reverse = jnp.asarray(inputs.reverse_index)
    groups = int(inputs.groups)
    if groups == 1:
        return reverse
    offsets = jnp.arange(groups, dtype=reverse.dtype)[:, None] * (num_units // groups)
    return (reverse.reshape(groups, -1) + offsets).reshape(-1)


def prepare_vision_inputs(
    image_grid_thw: np.ndarray,
    pixel_values: np.ndarray,
    config: VisionConfig,
    *,
    bucket_sizes: Sequence[int] | int | None = None,
    row_patches: int | None = None,
    row_buckets: Sequence[int] | int | None = None,
) -> VisionInputs:
    """Concatenated images -> bucket-padded `VisionInputs` in window-slot layout (numpy; run on the host).

    image_grid_thw: [n, 3] (t, h, w) in patches per image; pixel_values: [sum t*h*w, C*T*P*P] as the image processor
    returns them. Without `row_patches`: one row whose length is the smallest of `bucket_sizes` (default W * 2**k)
    that holds all window slots. With `row_patches` (a multiple of W): images are packed in order into rows of that
    length and the row count is padded to the smallest of `row_buckets` (default 1, 2, 4, ...).
    """
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    pixels = np.asarray(pixel_values)
    merge = int(config.spatial_merge_size)
    unit = merge * merge
    slot = window_slot_patches(config)
    window = int(config.window_size) // merge // int(config.patch_size)
    if len(grid) == 0:
        raise ValueError("prepare_vision_inputs got no images (image_grid_thw is empty); pass vision_inputs=None")
    if np.any(grid <= 0) or np.any(grid[:, 1:] % merge):
        raise ValueError(f"image_grid_thw {grid.tolist()} must be positive with h, w divisible by {merge}")
    num_patches = int(np.sum(np.prod(grid, axis=1)))
    if pixels.ndim != 2 or pixels.shape[0] != num_patches:
        raise ValueError(
            f"pixel_values has shape {pixels.shape} but image_grid_thw {grid.tolist()} needs [{num_patches}, D]"
        )

    layouts = [_window_order(t, h, w, merge, window) for t, h, w in grid.tolist()]
    image_patches = [num_windows * slot for _, _, num_windows in layouts]  # slot-layout size of each image

    # place whole images into rows
    if row_patches is None:
        if isinstance(bucket_sizes, int):
            bucket_sizes = [bucket_sizes]
        sizes = bucket_sizes or _powers_of_two_times(slot, sum(image_patches))
        length = _smallest_fit(
            sum(image_patches), sizes, "window-slot patches", "add a larger bucket or lower max_pixels"
        )
        starts, num_rows = list(np.cumsum([0, *image_patches[:-1]])), 1
    else:
        length = int(row_patches)
        starts = _row_starts(image_patches, length)
        used_rows = starts[-1] // length + 1
        if isinstance(row_buckets, int):
            row_buckets = [row_buckets]
        num_rows = _smallest_fit(
            used_rows, row_buckets or _powers_of_two_times(1, used_rows), "rows", "add a row bucket"
        )
    if length % slot:
        raise ValueError(f"vision bucket / row length {length} is not a multiple of the window slot size {slot}")

    total = num_rows * length
    out_pixels = np.zeros((total, pixels.shape[1]), dtype=pixels.dtype)
    full_ids = np.zeros(total, dtype=np.int32)
    window_ids = np.zeros(total, dtype=np.int32)
    positions = np.zeros((total, 2), dtype=np.int32)
    reverse_real = []
    src_offset = frame_offset = window_offset = 0
    for (t, h, w), (order, local_window, num_windows), start in zip(grid.tolist(), layouts, starts, strict=True):
        units_per_window = slot // unit
        rank_in_window = np.arange(len(order)) - np.searchsorted(local_window, local_window)
        dst_unit = start // unit + local_window * units_per_window + rank_in_window  # slot-layout unit of order[k]
        dst = (dst_unit[:, None] * unit + np.arange(unit)).reshape(-1)
        src = (order[:, None] * unit + np.arange(unit)).reshape(-1)
        out_pixels[dst] = pixels[src_offset + src]
        positions[dst] = _positions(t, h, w, merge)[src]
        window_ids[dst] = np.repeat(window_offset + local_window + 1, unit)
        full_ids[dst] = np.repeat(frame_offset + order // ((h // merge) * (w // merge)) + 1, unit)
        image_reverse = np.empty(len(order), dtype=np.int64)
        image_reverse[order] = dst_unit
        reverse_real.append(image_reverse)
        src_offset += t * h * w
        frame_offset += t
        window_offset += num_windows

    reverse_real = np.concatenate(reverse_real)
    unused = np.setdiff1d(np.arange(total // unit), reverse_real)
    return VisionInputs(
        pixel_values=out_pixels.reshape(num_rows, length, -1),
        full_segment_ids=full_ids.reshape(num_rows, length),
        window_segment_ids=window_ids.reshape(total // slot, slot),
        position_ids=positions.reshape(num_rows, length, 2),
        reverse_index=np.concatenate([reverse_real, unused]).astype(np.int32),
        num_merged_tokens=np.asarray(len(reverse_real), dtype=np.int32),
    )


def row_length_for(
    slot_sizes: Sequence[int], config: VisionConfig, row_lengths: Sequence[int] | int | None = None
) -> int:
    """The vision row length for images of these `image_slot_patches` sizes: the smallest of `row_lengths`
    (default W * 2**k) that holds the largest image, so a full-attention row never outgrows one image's bucket."""
    slot = window_slot_patches(config)
    largest = max(slot_sizes, default=slot)
    if isinstance(row_lengths, int):
        row_lengths = [row_lengths]
    sizes = row_lengths or _powers_of_two_times(slot, largest)
    return _smallest_fit(largest, sizes, "window-slot patches (one image)", "add a larger bucket or lower max_pixels")


def prepare_vision_rows(
    image_grid_thw: np.ndarray,
    pixel_values: np.ndarray,
    config: VisionConfig,
    *,
    row_lengths: Sequence[int] | int | None = None,
    row_buckets: Sequence[int] | int | None = None,
) -> VisionInputs:
    """`prepare_vision_inputs` with rows sized by the largest image (`row_length_for`), for calls that carry the
    images of many prompts (sampling, the GRPO update): full-attention cost is rows * L**2 with L bounded by one
    image, never (all patches of the call)**2; each image frame is its own segment within its row."""
    sizes = image_slot_patches(image_grid_thw, config)
    length = row_length_for(sizes, config, row_lengths)
    return prepare_vision_inputs(image_grid_thw, pixel_values, config, row_patches=length, row_buckets=row_buckets)
