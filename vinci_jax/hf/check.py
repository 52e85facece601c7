"""Parity check: the same random batch through transformers (PyTorch, CPU) and through vinci_jax.

The batch has two rows: text around two images of different sizes, and a shorter left-padded row with one more
image, so image splicing, 3-D positions, window attention and padding masks are all exercised. Logits are compared
on real tokens only (what padding positions hold is unspecified in both implementations).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax.models.families import family_of_config

DEFAULT_GRIDS = ((1, 6, 10), (1, 8, 4), (1, 4, 6))  # (t, h, w) in patches: odd merged widths, different shapes


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray  # int64 [B, L]
    attention_mask: np.ndarray  # int64 [B, L]
    pixel_values: np.ndarray  # float32 [patches, C*T*P*P]
    image_grid_thw: np.ndarray  # int64 [n, 3]


def random_batch(
    config: Any,
    seed: int = 0,
    grids: tuple[tuple[int, int, int], ...] = DEFAULT_GRIDS,
    rows: tuple[tuple[Any, ...], ...] = ((5, 0, 3, 1, 4), (3, 2, 6)),
    left_pad: bool = True,
) -> Batch:
    """`rows`: per row, ints are runs of random text tokens and the index k in `grids` stands for image k.

    Every image index must appear once, in increasing order (the order the model consumes image features).
    Text ids avoid every special id of the config; images are wrapped in vision_start/vision_end.
    """
    rng = np.random.default_rng(seed)
    special = {
        config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id,
    }  # fmt: skip
    vocab = min(config.text.vocab_size, 151643)
    pool = np.setdiff1d(np.arange(vocab), np.fromiter(special, int))
    merge = config.vision.spatial_merge_size
    seqs, images = [], []
    for row in rows:
        ids: list[int] = []
        parts = list(row)
        for k, part in enumerate(parts):
            if k % 2 == 0:
                ids += rng.choice(pool, size=int(part)).tolist()
            else:
                t, h, w = grids[int(part)]
                images.append(int(part))
                ids += [config.vision_start_token_id]
                ids += [config.image_token_id] * (t * h * w // merge**2)
                ids += [config.vision_end_token_id]
        seqs.append(ids)
    if images != sorted(images) or images != list(range(len(grids))):
        raise ValueError(f"rows {rows} must use each of the {len(grids)} images once, in order")
    length = max(map(len, seqs))
    input_ids = np.zeros((len(seqs), length), np.int64)
    mask = np.zeros((len(seqs), length), np.int64)
    for b, ids in enumerate(seqs):
        cols = slice(length - len(ids), length) if left_pad else slice(0, len(ids))
        input_ids[b, cols] = ids
        mask[b, cols] = 1
    v = config.vision
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
    grid = np.asarray(grids, np.int64)
    pixels = rng.normal(size=(int(grid.prod(axis=1).sum()), patch_dim)).astype(np.float32)
    return Batch(input_ids, mask, pixels, grid)


def torch_logits(hf_model: Any, batch: Batch, image_token_id: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = hf_model(
            input_ids=torch.from_numpy(batch.input_ids),
            attention_mask=torch.from_numpy(batch.attention_mask),
            pixel_values=torch.from_numpy(batch.pixel_values),
            image_grid_thw=torch.from_numpy(batch.image_grid_thw),
            mm_token_type_ids=torch.from_numpy((batch.input_ids == image_token_id).astype(np.int64)),
        )
    return out.logits.float().numpy()


@nnx.jit
def _forward(model: Any, ids: Any, positions: Any, mask: Any, vision_inputs: Any) -> Any:
    return model(ids, positions, attention_mask=mask, vision_inputs=vision_inputs)


def jax_logits(model: Any, batch: Batch) -> np.ndarray:
    """vinci_jax logits (float32 numpy) for `batch`, positions and vision inputs prepared on the host."""

    config = model.config
    family = family_of_config(config)  # the model's own rope index and vision layout (either family)
    positions, _ = family.get_rope_index(batch.input_ids, batch.image_grid_thw, batch.attention_mask, config=config)
    vision_inputs = family.prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, config.vision)
    vision_inputs = jax.tree.map(jnp.asarray, vision_inputs)

    logits = _forward(
        model,
        jnp.asarray(batch.input_ids, jnp.int32),
        jnp.asarray(positions),
        jnp.asarray(batch.attention_mask, jnp.int32),
        vision_inputs,
    )
    return np.asarray(logits, np.float32)


def compare(ref: np.ndarray, ours: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    real = mask.astype(bool)
    diff = np.abs(ref - ours)[real]
    top1 = (ref.argmax(-1) == ours.argmax(-1))[real]
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(top1.mean()),
    }


def check(hf_dir: str | os.PathLike, *, tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Load `hf_dir` both ways in float32, run the random batch, and report the logit differences."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vinci_jax.models.families import family_of_hf_dir

    family = family_of_hf_dir(hf_dir)  # Qwen2.5-VL or Qwen3-VL, by config.json model_type
    config = family.read_config(hf_dir)
    batch = random_batch(config, seed)
    hf_model = AutoModelForImageTextToText.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ref = torch_logits(hf_model, batch, config.image_token_id)
    del hf_model
    with jax.default_matmul_precision("highest"):
        model = family.load(hf_dir, dtype=np.float32)
        ours = jax_logits(model, batch)
    result: dict[str, Any] = {"dir": str(hf_dir), **compare(ref, ours, batch.attention_mask)}
    result.update(tolerance=tolerance, ok=result["max_abs_diff"] <= tolerance)
    return result
