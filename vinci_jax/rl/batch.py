"""Host-side assembly of GRPO training micro-batches from sampled rollouts.

Row r of a micro-batch is prompt `prompt_index[r]` (left-padded, as the sampler saw it) followed by its response
(right-padded). Positions continue the prompt's 3-D positions on all three axes, exactly as decoding assigned them,
so the training forward sees the same inputs the sampler conditioned on. The sequence length is rounded up to a
bucket of the longest response in the micro-batch, not the maximum allowed response length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vinci_jax.models.qwen2_5_vl.vision_inputs import prepare_vision_inputs
from vinci_jax.sampling.prompts import PromptBatch, bucket_length
from vinci_jax.sampling.sampler import SampleOutput


def build_micro_batch(
    rows: Sequence[int],
    prompts: PromptBatch,
    raw_prompts: Sequence[dict[str, np.ndarray]],
    samples: SampleOutput,
    advantages: np.ndarray,
    vision_config: Any,
    pad_token_id: int,
    *,
    patch_buckets: Sequence[int] | int | None = None,
) -> dict[str, Any]:
    """Arrays for rollout rows `rows`: input_ids, attention_mask, position_ids, vision_inputs, targets,
    response_mask, old_logprobs (the sampler's, aligned to targets) and advantages."""
    rows = list(rows)
    prompt_len = prompts.input_ids.shape[1]
    longest = int(max(samples.lengths[r] for r in rows))
    width = bucket_length(prompt_len + max(longest, 1))
    count = len(rows)
    ids = np.full((count, width), pad_token_id, np.int32)
    mask = np.zeros((count, width), np.int32)
    positions = np.zeros((3, count, width), np.int32)
    targets = np.full((count, width), pad_token_id, np.int32)
    response_mask = np.zeros((count, width), np.float32)
    old = np.zeros((count, width), np.float32)
    for i, r in enumerate(rows):
        p, n = int(samples.prompt_index[r]), int(samples.lengths[r])
        ids[i, :prompt_len] = prompts.input_ids[p]
        mask[i, :prompt_len] = prompts.attention_mask[p]
        positions[:, i, :prompt_len] = prompts.position_ids[:, p]
        ids[i, prompt_len : prompt_len + n] = samples.tokens[r, :n]
        mask[i, prompt_len : prompt_len + n] = 1
        positions[:, i, prompt_len : prompt_len + n] = prompts.next_positions[p] + np.arange(n)
        targets[i, :-1] = ids[i, 1:]
        response_mask[i, prompt_len - 1 : prompt_len - 1 + n] = 1.0
        old[i, prompt_len - 1 : prompt_len - 1 + n] = samples.logprobs[r, :n]

    grids = [np.asarray(raw_prompts[samples.prompt_index[r]]["image_grid_thw"]).reshape(-1, 3) for r in rows]
    vision = None
    if sum(len(g) for g in grids):
        pixels = [np.asarray(raw_prompts[samples.prompt_index[r]]["pixel_values"]) for r in rows]
        vision = prepare_vision_inputs(
            np.concatenate(grids), np.concatenate(pixels), vision_config, bucket_sizes=patch_buckets
        )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "vision_inputs": vision,
        "targets": targets,
        "response_mask": response_mask,
        "old_logprobs": old,
        "advantages": np.asarray([advantages[r] for r in rows], np.float32),
    }
