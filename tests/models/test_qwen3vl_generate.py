"""Greedy generation with the shared Sampler on a tiny Qwen3-VL checkpoint equals transformers' generate."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from vinci_jax.hf.qwen3_vl import load_qwen3_vl
from vinci_jax.models.qwen3_vl.testing import TINY_BOS, TINY_EOS, TINY_SPECIALS, save_tiny_checkpoint
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch

IMAGE, VSTART, VEND = (TINY_SPECIALS[k] for k in ("image_token_id", "vision_start_token_id", "vision_end_token_id"))
EOS, PAD = TINY_EOS, TINY_BOS
PATCH_DIM = 3 * 2 * 16 * 16


def _prompt(rng, grid, before, after):
    t, h, w = grid
    ids = list(rng.integers(0, 290, before)) + [VSTART] + [IMAGE] * (t * h * w // 4) + [VEND]
    ids += list(rng.integers(0, 290, after))
    return {
        "input_ids": np.asarray(ids, np.int32),
        "pixel_values": rng.normal(size=(t * h * w, PATCH_DIM)).astype(np.float32),
        "image_grid_thw": np.asarray([grid], np.int64),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    jax.config.update("jax_default_matmul_precision", "highest")
    from transformers import Qwen3VLForConditionalGeneration

    path = save_tiny_checkpoint(tmp_path_factory.mktemp("qwen3vl_gen"), initializer_range=0.2, seed=3)
    torch_model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompts = [_prompt(rng, (1, 4, 6), 5, 3), _prompt(rng, (1, 6, 4), 2, 9), _prompt(rng, (1, 2, 2), 1, 1)]
    yield torch_model, load_qwen3_vl(path), prompts
    jax.config.update("jax_default_matmul_precision", None)


def test_greedy_matches_transformers_generate(setup):
    torch_model, model, prompts = setup
    batch = make_prompt_batch(prompts, model.config, PAD)
    out = Sampler(model, (EOS,), PAD).generate(batch, SamplingParams(greedy=True, max_new_tokens=12))
    with torch.no_grad():
        ref = torch_model.generate(
            input_ids=torch.as_tensor(batch.input_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(batch.attention_mask, dtype=torch.long),
            pixel_values=torch.as_tensor(np.concatenate([p["pixel_values"] for p in prompts])),
            image_grid_thw=torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in prompts])),
            mm_token_type_ids=torch.as_tensor(batch.input_ids == IMAGE, dtype=torch.int32),
            max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=PAD,
        )[:, batch.input_ids.shape[1] :].numpy()  # fmt: skip
    for row in range(len(prompts)):
        n = out.lengths[row]
        assert n >= 4, "a meaningful comparison needs a few generated tokens"
        np.testing.assert_array_equal(out.tokens[row, :n], ref[row, :n], err_msg=f"row {row}")
    assert len({tuple(out.tokens[r]) for r in range(3)}) > 1  # rows differ: images and prompts matter
