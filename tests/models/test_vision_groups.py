"""Grouped vision inputs (one block per batch shard, as multi-host SFT builds them) give the same logits as one
block for the whole batch, in both model families, including shards without images and sharded over 8 devices."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax import sharding
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.hf.qwen3_vl import load_qwen3_vl
from vinci_jax.models.families import family_of_model
from vinci_jax.models.qwen3_vl.testing import save_tiny_checkpoint
from vinci_jax.models.vision_inputs import (
    blank_like,
    empty_vision_inputs,
    grouped_vision_inputs,
    image_slot_patches,
    pad_vision_inputs,
    prepare_vision_inputs,
    rows_needed,
    stack_vision_groups,
)

# per batch row: the (t, h, w) patch grids of its images, in token order
ROW_IMAGES = [[(1, 4, 4)], [], [(1, 4, 8), (1, 4, 4)], [(1, 8, 4)]]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def model(request, tiny_qwen25_dir, tmp_path_factory):
    if request.param == "qwen2_5_vl":
        return load_qwen2_5_vl(tiny_qwen25_dir)
    return load_qwen3_vl(save_tiny_checkpoint(tmp_path_factory.mktemp("qwen3_groups")))


def _patch_dim(vision) -> int:
    return vision.in_channels * vision.temporal_patch_size * vision.patch_size**2


def _batch(model):
    """input_ids [4, L], positions [3, 4, L], and per row (grids, pixels)."""
    config, rng = model.config, np.random.default_rng(0)
    merge = config.vision.spatial_merge_size
    rows, images = [], []
    for grids in ROW_IMAGES:
        ids, pixels = [5, 6], []
        for t, h, w in grids:
            ids += [config.image_token_id] * (t * h * w // merge**2) + [7]
            pixels.append(rng.normal(size=(t * h * w, _patch_dim(config.vision))).astype(np.float32))
        rows.append(ids)
        images.append((np.asarray(grids, np.int64).reshape(-1, 3), pixels))
    length = max(map(len, rows))
    input_ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(input_ids)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)], mask[r, : len(ids)] = ids, 1
    grid = np.concatenate([g for g, _ in images])
    positions, _ = family_of_model(model).get_rope_index(input_ids, grid, mask, config=config)
    return input_ids, mask, positions, images


def _logits(model, input_ids, mask, positions, vision):
    return np.asarray(model(jnp.asarray(input_ids), jnp.asarray(positions), jnp.asarray(mask), vision_inputs=vision))


def _grouped(model, images, groups):
    """One block per `groups` consecutive rows, with rows / row length agreed over the blocks."""
    vision, per = model.config.vision, len(images) // groups
    blocks = []
    for g in range(groups):
        grids = [grid for grid, _ in images[g * per : (g + 1) * per] if len(grid)]
        pixels = [p for _, ps in images[g * per : (g + 1) * per] for p in ps]
        blocks.append((np.concatenate(grids), np.concatenate(pixels)) if grids else None)
    sizes = [image_slot_patches(b[0], vision) for b in blocks if b is not None]
    length = max(max(s) for s in sizes)
    rows = max(rows_needed(s, length) for s in sizes)
    return grouped_vision_inputs(blocks, vision, row_patches=length, rows=rows, patch_dim=_patch_dim(vision))


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_vision_inputs_equal_one_block(model, groups):
    input_ids, mask, positions, images = _batch(model)
    grid = np.concatenate([g for g, _ in images])
    whole = prepare_vision_inputs(grid, np.concatenate([p for _, ps in images for p in ps]), model.config.vision)
    grouped = _grouped(model, images, groups)
    assert grouped.groups == groups and grouped.num_merged_tokens.shape == (groups,)
    expected = _logits(model, input_ids, mask, positions, whole)
    np.testing.assert_allclose(_logits(model, input_ids, mask, positions, grouped), expected, atol=1e-5, rtol=1e-5)

    # the grouping matters: reading the blocks as one group puts the wrong features at row 2's image tokens
    wrong = _logits(model, input_ids, mask, positions, dataclasses.replace(grouped, groups=1))
    assert np.abs(wrong - expected).max() > 1e-3


def test_grouped_forward_sharded_over_eight_devices(model):
    input_ids, mask, positions, images = _batch(model)
    grouped = _grouped(model, images, 4)
    expected = _logits(model, input_ids, mask, positions, grouped)
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    rows = sharding.named_sharding(mesh, ("batch",), (4,))

    def put(x):
        x = np.asarray(x)
        spec = sharding.named_sharding(mesh, ("batch",) + (None,) * (x.ndim - 1), x.shape)
        return jax.device_put(x, spec)

    sharded = jax.tree.map(put, grouped)
    spread = jax.device_put(positions, sharding.named_sharding(mesh, (None, "batch", None), positions.shape))
    assert rows.spec[0] is not None
    with jax.set_mesh(mesh):
        out = jax.jit(lambda ids, pos, m, v: model(ids, pos, m, vision_inputs=v))(
            put(input_ids), spread, put(mask), sharded
        )
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=1e-5)


def test_stacking_blocks_of_different_shapes_is_refused(model):
    vision = model.config.vision
    a = empty_vision_inputs(1, 64, _patch_dim(vision), vision)
    b = empty_vision_inputs(2, 64, _patch_dim(vision), vision)
    with pytest.raises(ValueError, match="share one shape"):
        stack_vision_groups([a, b])


@pytest.mark.parametrize("groups", [1, 2])
def test_padding_to_a_larger_layout_keeps_the_logits(model, groups):
    """pad_vision_inputs (used to stack accumulation micro-batches) moves every real patch with its row."""
    input_ids, mask, positions, images = _batch(model)
    grouped = _grouped(model, images, groups) if groups > 1 else None
    if grouped is None:
        grid = np.concatenate([g for g, _ in images])
        pixels = np.concatenate([p for _, ps in images for p in ps])
        length = max(image_slot_patches(grid, model.config.vision))
        grouped = prepare_vision_inputs(grid, pixels, model.config.vision, row_patches=length)
    expected = _logits(model, input_ids, mask, positions, grouped)
    rows, length = grouped.pixel_values.shape[0] // groups, grouped.pixel_values.shape[1]
    padded = pad_vision_inputs(grouped, 2 * rows + 1, 2 * length)
    assert padded.pixel_values.shape[:2] == (groups * (2 * rows + 1), 2 * length)
    np.testing.assert_allclose(_logits(model, input_ids, mask, positions, padded), expected, atol=1e-5, rtol=1e-5)
    blank = blank_like(padded)
    assert not blank.full_segment_ids.any() and np.asarray(blank.num_merged_tokens).sum() == 0


def test_micro_batches_with_different_vision_layouts_stack(model):
    from vinci_jax.train.data import stack_micro_batches

    _, _, _, images = _batch(model)
    small = _grouped(model, images[:2] + [(np.zeros((0, 3), np.int64), [])] * 2, 2)
    large = _grouped(model, images, 2)
    no_images = {"input_ids": np.zeros((4, 8), np.int32)}
    stacked = stack_micro_batches([{**no_images, "vision_inputs": small}, {**no_images, "vision_inputs": large},
                                   no_images])  # fmt: skip
    vision = stacked["vision_inputs"]
    assert vision.pixel_values.shape[0] == 3 and vision.pixel_values.shape[2:] == large.pixel_values.shape[1:]
    assert vision.groups == 2 and np.asarray(vision.num_merged_tokens)[2].sum() == 0
