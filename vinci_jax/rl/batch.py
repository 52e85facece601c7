"""Host-side assembly of GRPO training micro-batches from sampled rollouts.

Row r of a micro-batch is prompt `prompt_index[r]` (left-padded, as the sampler saw it) followed by its response
(right-padded). Positions continue the prompt's 3-D positions on all three axes, exactly as decoding assigned them,
so the training forward sees the same inputs the sampler conditioned on. The response window is rounded up to a
bucket of the longest response in the micro-batch, not the maximum allowed response length.

Targets live in that window only: `targets[b, j]` is the token at sequence position `response_start + 1 + j`
(`response_start` = prompt length - 1), so the LM head and the log-softmax over the vocabulary run on the response
window instead of the whole sequence (the prompt's logits are never needed, and with a 152k vocabulary they would
dominate memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vinci_jax.models.vision_inputs import prepare_vision_rows
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
    """Arrays for rollout rows `rows`: input_ids, attention_mask, position_ids, vision_inputs, response_start,
    and over the response window: targets, response_mask, old_logprobs (the sampler's); plus advantages."""
    rows = list(rows)
    prompt_len = prompts.input_ids.shape[1]
    longest = int(max(samples.lengths[r] for r in rows))
    window = bucket_length(max(longest, 1), minimum=16)
    width = prompt_len + window
    count = len(rows)
    ids = np.full((count, width), pad_token_id, np.int32)
    mask = np.zeros((count, width), np.int32)
    positions = np.zeros((3, count, width), np.int32)
    response_mask = np.zeros((count, window), np.float32)
    old = np.zeros((count, window), np.float32)
    for i, r in enumerate(rows):
        p, n = int(samples.prompt_index[r]), int(samples.lengths[r])
        ids[i, :prompt_len] = prompts.input_ids[p]
        mask[i, :prompt_len] = prompts.attention_mask[p]
        positions[:, i, :prompt_len] = prompts.position_ids[:, p]
        ids[i, prompt_len : prompt_len + n] = samples.tokens[r, :n]
        mask[i, prompt_len : prompt_len + n] = 1
        positions[:, i, prompt_len : prompt_len + n] = prompts.next_positions[p] + np.arange(n)
        response_mask[i, :n] = 1.0
        old[i, :n] = samples.logprobs[r, :n]

    grids = [np.asarray(raw_prompts[samples.prompt_index[r]]["image_grid_thw"]).reshape(-1, 3) for r in rows]
    vision = None
    if sum(len(g) for g in grids):
        pixels = [np.asarray(raw_prompts[samples.prompt_index[r]]["pixel_values"]) for r in rows]
        vision = prepare_vision_rows(
            np.concatenate(grids), np.concatenate(pixels), vision_config, row_lengths=patch_buckets
        )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "vision_inputs": vision,
        "response_start": np.int32(prompt_len - 1),
        "targets": ids[:, prompt_len:],
        "response_mask": response_mask,
        "old_logprobs": old,
        "advantages": np.asarray([advantages[r] for r in rows], np.float32),
    }
