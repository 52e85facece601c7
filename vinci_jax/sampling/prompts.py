"""Host-side batching of processed prompts: left padding to a length bucket, 3-D positions, bucketed images.

Left padding puts every prompt's last token in the same column, so the first sampled token of every row comes from
one slice of the prefill logits and decoding proceeds in lock-step. Lengths and patch counts are rounded up to
buckets so that the jitted prefill compiles once per (batch, length bucket, patch bucket).
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
    image frame its own segment; no row grows with the batch), row count bucketed (None without images).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    next_positions: np.ndarray
    prompt_lengths: np.ndarray
    vision_inputs: VisionInputs | None

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

    grids = [np.asarray(p["image_grid_thw"]).reshape(-1, 3) for p in prompts if p.get("image_grid_thw") is not None]
    pixels = [np.asarray(p["pixel_values"]) for p in prompts if p.get("pixel_values") is not None]
    grid = np.concatenate(grids) if grids else np.zeros((0, 3), np.int64)
    vision = None
    if len(grid):
        vision = family.prepare_vision_rows(grid, np.concatenate(pixels), config.vision, row_lengths=patch_buckets)
    positions, deltas = family.get_rope_index(ids, grid if len(grid) else None, mask, config=config)
    next_positions = (lengths + deltas[:, 0]).astype(np.int32)
    return PromptBatch(ids, mask, positions, next_positions, lengths, vision)
