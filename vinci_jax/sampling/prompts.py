"""Host-side batching of processed prompts: left padding to a length bucket, 3-D positions, bucketed images.

Left padding puts every prompt's last token in the same column, so the first sampled token of every row comes from
one slice of the prefill logits and decoding proceeds in lock-step. Lengths and patch counts are rounded up to
buckets so that the jitted prefill compiles once per (batch, length bucket, patch bucket). `prompt_group` cuts a
few prompts out of a batch as a batch of their own (the rollout engine prefills on demand, a group at a time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vinci_jax.models.families import family_of_config
from vinci_jax.models.vision_inputs import VisionInputs


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """B prompts, left-padded to one length bucket.

    input_ids, attention_mask: int32 [B, L]; position_ids: int32 [3, B, L]; next_positions: int32 [B] (the 3-D
    position of each row's first generated token, on all three axes); prompt_lengths: real tokens per row;
    vision_inputs: all images of the batch in row-major token order, in vision rows sized by the largest image (each
    image frame its own segment; no row grows with the batch), row count bucketed (None without images);
    images: each prompt's own (image_grid_thw [k, 3], pixel_values) or None, so a group of prompts can be given
    just its images (`prompt_group`).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    next_positions: np.ndarray
    prompt_lengths: np.ndarray
    vision_inputs: VisionInputs | None
    images: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = ()

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


def bucket_length(length: int, minimum: int = 32) -> int:
    """The smallest power of two >= length (and >= minimum)."""
    size = minimum
    while size < length:
        size *= 2
    return size


def make_prompt_batch(
    prompts: Sequence[Mapping[str, Any]],
    config: Any,
    pad_token_id: int,
    *,
    length: int | None = None,
    patch_buckets: Sequence[int] | int | None = None,
) -> PromptBatch:
    """Processor outputs (input_ids, pixel_values, image_grid_thw per prompt) -> one left-padded PromptBatch.

    `config` is the model's (either family: its rope index and vision layout come from `ModelFamily`);
    `patch_buckets` are the allowed vision row lengths in patches (default: window slot * 2**k).
    """
    family = family_of_config(config)
    if not prompts:
        raise ValueError("make_prompt_batch needs at least one prompt")
    lengths = np.asarray([len(p["input_ids"]) for p in prompts], np.int32)
    width = length or bucket_length(int(lengths.max()))
    if lengths.max() > width:
        raise ValueError(f"a prompt has {lengths.max()} tokens, more than the requested length {width}")
    ids = np.full((len(prompts), width), pad_token_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        ids[row, width - lengths[row] :] = prompt["input_ids"]
        mask[row, width - lengths[row] :] = 1

    images = tuple(
        (np.asarray(p["image_grid_thw"]).reshape(-1, 3), np.asarray(p["pixel_values"]))
        if p.get("image_grid_thw") is not None and p.get("pixel_values") is not None else None
        for p in prompts
    )  # fmt: skip
    grid, vision = _vision_rows(images, config, patch_buckets)
    positions, deltas = family.get_rope_index(ids, grid if len(grid) else None, mask, config=config)
    next_positions = (lengths + deltas[:, 0]).astype(np.int32)
    return PromptBatch(ids, mask, positions, next_positions, lengths, vision, images)


def _vision_rows(
    images: Sequence[tuple[np.ndarray, np.ndarray] | None], config: Any, row_lengths: Sequence[int] | int | None
) -> tuple[np.ndarray, VisionInputs | None]:
    """All grids [k, 3] of `images` in order, and their VisionInputs (None without images)."""
    present = [image for image in images if image is not None]
    if not present:
        return np.zeros((0, 3), np.int64), None
    grid = np.concatenate([g for g, _ in present])
    pixels = np.concatenate([p for _, p in present])
    family = family_of_config(config)
    return grid, family.prepare_vision_rows(grid, pixels, config.vision, row_lengths=row_lengths)


def prompt_group(batch: PromptBatch, prompts: Sequence[int], rows: int, config: Any) -> PromptBatch:
    """Prompts `prompts` of `batch` as a batch of `rows` rows (the ones past len(prompts) all padding: mask 0, no
    image), cut to the last `bucket_length(longest prompt)` columns (the batch is left-padded, so they hold every
    token of these prompts) and carrying only these prompts' images, in vision rows as long as the batch's. Each
    row therefore sees what it sees in the whole batch (same tokens, positions, image layout), so a group prefill
    gives what the whole-batch prefill gives for these prompts, at a bounded set of shapes."""
    index = np.asarray(prompts, np.int64)
    if not 0 < len(index) <= rows:
        raise ValueError(f"a group of {rows} rows cannot hold {len(index)} prompts")
    if batch.vision_inputs is not None and len(batch.images) != batch.batch_size:
        raise ValueError("this batch has images but not each prompt's own (build it with make_prompt_batch)")
    columns = batch.input_ids.shape[1]
    width = min(columns, bucket_length(int(batch.prompt_lengths[index].max())))
    cut = slice(columns - width, columns)
    pad_id = int(batch.input_ids[0, 0]) if batch.attention_mask[0, 0] == 0 else 0  # padding's id (masked anyway)
    ids = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    positions = np.zeros((3, rows, width), np.int32)
    ids[: len(index)], mask[: len(index)] = batch.input_ids[index, cut], batch.attention_mask[index, cut]
    positions[:, : len(index)] = batch.position_ids[:, index, cut]
    lengths = np.zeros(rows, np.int32)
    lengths[: len(index)] = batch.prompt_lengths[index]
    next_positions = np.zeros(rows, np.int32)
    next_positions[: len(index)] = batch.next_positions[index]
    images = tuple(batch.images[i] for i in index) + (None,) * (rows - len(index)) if batch.images else ()
    vision = None
    if batch.vision_inputs is not None:
        row_length = int(batch.vision_inputs.full_segment_ids.shape[1])
        vision = _vision_rows(images, config, (row_length,))[1]
    return PromptBatch(ids, mask, positions, next_positions, lengths, vision, images)
