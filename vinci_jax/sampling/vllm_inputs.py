"""What vLLM is handed for one rollout request, built from our processor's outputs (no vLLM import here).

vLLM's Qwen2.5-VL / Qwen3-VL take a prompt's image as a PIL image in `multi_modal_data` and run the HF image
processor on it themselves. The RL pipeline keeps only the processed patches (`pixel_values`, `image_grid_thw`), so
the image vLLM gets is rebuilt from them: our processor resizes to a multiple of the patch grid, takes uint8 levels
and normalises them with a per-level table, which is invertible exactly. Given the same min/max pixels, vLLM's
processor keeps that size (smart_resize of a size already on the grid is the identity) and computes the same
patches, so both engines see the same pixels; `prompt_images` checks the inversion is exact and says so if not.

Seeds: our sampler draws row r of a chunk with `split(key, rows)[r]`; vLLM takes one integer seed per request, so
the same per-row key is folded to a 63-bit seed. The streams differ (vLLM has its own RNG), but a step's rollouts
are still a function of (run seed, step, chunk, row) and reproducible on the same engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image


def image_from_patches(
    pixel_values: np.ndarray,
    grid_thw: Sequence[int],
    image_processor: Any,
) -> Image.Image:
    """One image's patches [t*h*w, C*T*P*P] (our processor's layout) -> the resized uint8 RGB image they came from.

    Raises ValueError when the patches are not the exact normalisation of uint8 levels (e.g. another processor's).
    """
    p, m, t = image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size
    grid_t, gh, gw = (int(x) for x in grid_thw)
    if grid_t != 1:
        raise ValueError(f"image_from_patches takes still images (grid t=1), got grid {list(grid_thw)}")
    channels = len(image_processor.image_mean)
    blocks = np.asarray(pixel_values, np.float32).reshape(gh // m, gw // m, m, m, channels, t, p, p)[:, :, :, :, :, 0]
    chw = blocks.transpose(4, 0, 2, 5, 1, 3, 6).reshape(channels, gh * p, gw * p)  # inverse of ImageProcessor.patchify
    table = image_processor.normalization_table()  # [C, 256], increasing in the level
    levels = np.empty(chw.shape, np.uint8)
    for c in range(channels):
        index = np.clip(np.searchsorted(table[c], chw[c]), 1, 255)
        nearer_low = np.abs(chw[c] - table[c][index - 1]) <= np.abs(chw[c] - table[c][index])
        levels[c] = np.where(nearer_low, index - 1, index)
        if not np.array_equal(table[c][levels[c]], chw[c]):
            raise ValueError(
                "pixel_values are not our image processor's normalised uint8 levels; the vLLM engine needs the "
                "processor's own output (vinci_jax.processing) to rebuild the prompt image"
            )
    return Image.fromarray(levels.transpose(1, 2, 0), mode="RGB")


def prompt_images(prompt: Mapping[str, Any], image_processor: Any) -> list[Image.Image]:
    """The images of one processed prompt (input_ids, pixel_values, image_grid_thw), in prompt order."""
    if prompt.get("image_grid_thw") is None:
        return []
    grids = np.asarray(prompt["image_grid_thw"]).reshape(-1, 3)
    pixels = np.asarray(prompt["pixel_values"])
    images, offset = [], 0
    for grid in grids:
        count = int(np.prod(grid))
        images.append(image_from_patches(pixels[offset : offset + count], grid, image_processor))
        offset += count
    if offset != len(pixels):
        raise ValueError(f"image_grid_thw covers {offset} patches but pixel_values has {len(pixels)}")
    return images


def collapse_image_pads(
    input_ids: Sequence[int], image_token_id: int, grids: np.ndarray, merge_size: int
) -> list[int]:
    """Our prompt ids (each image's pad token repeated once per merged patch) -> vLLM's (one pad per image).

    vLLM's Qwen-VL processor expands every image pad of a token prompt into the image's run itself; handed our
    already expanded run it expands the first pad again, so the prompt grows and the image lands on the wrong
    positions. Each run's length is checked against its image's grid (placeholder count = t*h*w / merge**2).
    """
    ids = [int(t) for t in np.asarray(input_ids).reshape(-1)]
    grids = np.asarray(grids).reshape(-1, 3)
    out: list[int] = []
    runs: list[int] = []
    for token in ids:
        if token == image_token_id and out and out[-1] == image_token_id:
            runs[-1] += 1
            continue
        if token == image_token_id:
            runs.append(1)
        out.append(token)
    expected = [int(np.prod(g)) // merge_size**2 for g in grids]
    if runs != expected:
        raise ValueError(
            f"the prompt's image pad runs {runs} do not match its images' token counts {expected} "
            f"(image_grid_thw {grids.tolist()}, merge size {merge_size})"
        )
    return out


def request_seeds(key_data: np.ndarray) -> list[int]:
    """Per-row JAX key data [rows, k] (uint32) -> one non-negative 63-bit integer seed per request."""
    words = np.asarray(key_data, np.uint64).reshape(len(key_data), -1)
    seeds = np.zeros(len(words), np.uint64)
    for column in range(words.shape[1]):
        seeds = (seeds * np.uint64(0x9E3779B1) + words[:, column]) & np.uint64(2**63 - 1)
    return [int(s) for s in seeds]
