"""Host-side assembly of GRPO training micro-batches from sampled rollouts, in one of two row layouts.

Padded (`build_micro_batch`, one rollout per row): row r of a micro-batch is prompt `prompt_index[r]` (left-padded,
as the sampler saw it) followed by its response (right-padded). Positions continue the prompt's 3-D positions on all
three axes, exactly as decoding assigned them, so the training forward sees the same inputs the sampler conditioned
on. The response window is rounded up to a bucket of the longest response in the micro-batch, not the maximum
allowed response length.

Targets live in that window only: `targets[b, j]` is the token at sequence position `response_start + 1 + j`
(`response_start` = prompt length - 1), so the LM head and the log-softmax over the vocabulary run on the response
window instead of the whole sequence (the prompt's logits are never needed, and with a 152k vocabulary they would
dominate memory).

Packed (`build_packed_micro_batch`, the default): rollouts (each its prompt's real tokens, then its response) are
packed first-fit by length into rows of one fixed `row_length`, told apart by `segment_ids` (1, 2, ... per row, 0 =
padding), which the decoder's attention already honours (causal within a segment, never across: the path packed SFT
rows use). Positions are each rollout's own, as in the padded layout. `target_positions[b, j]` is the row index of
the hidden state that predicts response token `targets[b, j]`, so the LM head still runs on response tokens only;
the response window is a multiple of row_length / 8 and the row count a multiple of micro_batch_rows / 4: a
micro-batch has one of at most 32 shapes whatever the lengths (in practice a handful: full micro-batches are alike),
so the gradient compiles a bounded number of times.

Shared-prefix (`build_shared_prefix_micro_batch`): one row per group, in a fixed slot layout: the prompt's real
tokens right-aligned in a prompt slot of P tokens, then n response slots of R tokens (one per rollout, right-padded;
padding inside slots is segment 0). The attention mask is the layout's branch structure (`BranchedSegments` as the
model's segment_ids: each response attends to the prompt and to itself only, causally), static per shape, so splash
takes it as a block mask. The prompt is computed once instead of n times, and the vision inputs hold each group's
image once (one encode per prompt per update). The first token of every response is predicted from the shared last
prompt position (P - 1), later ones from their own slot; positions are the unshared row's (the prompt's, then
`next_positions` onwards: what the family's rope index gave the sampler), so log-probs equal the padded layout's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from vinci_jax.models.attention import BranchedSegments
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
    and over the response window: targets, response_mask, rollout_logprobs (the sampler's); plus advantages."""
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
        vision = _vision_rows(grids, pixels, vision_config, patch_buckets)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "vision_inputs": vision,
        "response_start": np.int32(prompt_len - 1),
        "targets": ids[:, prompt_len:],
        "response_mask": response_mask,
        "rollout_logprobs": old,
        "advantages": np.asarray([advantages[r] for r in rows], np.float32),
    }


class RolloutRef(NamedTuple):
    """One rollout to pack: row `row` of `samples`, sampled from the left-padded `prompts` built from `raw`."""

    prompts: PromptBatch
    raw: Sequence[dict[str, np.ndarray]]
    samples: SampleOutput
    row: int
    advantage: float

    @property
    def prompt_index(self) -> int:
        return int(self.samples.prompt_index[self.row])

    @property
    def response_length(self) -> int:
        return int(self.samples.lengths[self.row])

    @property
    def length(self) -> int:
        """Tokens the rollout takes in a packed row: its prompt's real tokens and its response."""
        return int(self.prompts.attention_mask[self.prompt_index].sum()) + self.response_length


def first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` in bins of total <= capacity: first-fit decreasing (longest first, each into the first
    bin with room; ties keep input order, so the packing is deterministic)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -int(lengths[i])):
        size = int(lengths[i])
        if size > capacity:
            raise ValueError(f"a rollout of {size} tokens does not fit a packed row of {capacity}")
        slot = next((b for b, free in enumerate(room) if free >= size), None)
        if slot is None:
            bins.append([i])
            room.append(capacity - size)
        else:
            bins[slot].append(i)
            room[slot] -= size
    return bins


def response_window(tokens: int, row_length: int) -> int:
    """The response window of a packed micro-batch: a multiple of max(16, row_length // 8), at most row_length.

    At most 8 sizes (each one more compile), and the LM head runs on at most row_length / 8 padding per row."""
    quantum = max(16, -(-row_length // 8))
    return min(row_length, -(-max(tokens, 1) // quantum) * quantum)


def row_bucket(rows: int, max_rows: int) -> int:
    """Rows of a packed micro-batch: a multiple of max(1, max_rows // 4), at most max_rows (4 sizes at most)."""
    quantum = max(1, max_rows // 4)
    return min(max(max_rows, rows), -(-rows // quantum) * quantum)


def build_packed_micro_batch(
    rows: Sequence[Sequence[RolloutRef]],
    row_length: int,
    vision_config: Any,
    pad_token_id: int,
    *,
    num_rows: int | None = None,
    patch_buckets: Sequence[int] | int | None = None,
) -> dict[str, Any]:
    """Packed rows (each a list of rollouts) -> input_ids, segment_ids, position_ids [3, B, L], vision_inputs and,
    over the response window: target_positions, targets, response_mask, rollout_logprobs, advantages (per token).
    `num_rows` >= len(rows) pads with empty rows (segment 0, no targets)."""
    count = num_rows or len(rows)
    window = response_window(max((sum(ref.response_length for ref in row) for row in rows), default=1), row_length)
    arrays = _windowed_rows(count, row_length, window, pad_token_id)
    ids, segments, positions, target_positions, targets, response_mask, rollout_logprobs, advantages = arrays.values()
    grids, pixels = [], []
    for b, row in enumerate(rows):
        offset = out = 0
        for segment, ref in enumerate(row, start=1):
            p, n, samples = ref.prompt_index, ref.response_length, ref.samples
            real = ref.prompts.attention_mask[p] > 0
            prompt_len = int(real.sum())
            start, end = offset + prompt_len, offset + prompt_len + n
            if end > row_length or out + n > window:
                raise ValueError(f"packed row {b} overflows its {row_length} tokens")
            ids[b, offset:start] = ref.prompts.input_ids[p][real]
            ids[b, start:end] = samples.tokens[ref.row, :n]
            segments[b, offset:end] = segment
            positions[:, b, offset:start] = ref.prompts.position_ids[:, p][:, real]
            positions[:, b, start:end] = ref.prompts.next_positions[p] + np.arange(n)
            target_positions[b, out : out + n] = start - 1 + np.arange(n)
            targets[b, out : out + n] = samples.tokens[ref.row, :n]
            response_mask[b, out : out + n] = 1.0
            rollout_logprobs[b, out : out + n] = samples.logprobs[ref.row, :n]
            advantages[b, out : out + n] = ref.advantage
            grid = np.asarray(ref.raw[p].get("image_grid_thw", np.zeros((0, 3)))).reshape(-1, 3)
            if len(grid):  # image features replace image tokens in row-major order: images in packed order
                grids.append(grid)
                pixels.append(np.asarray(ref.raw[p]["pixel_values"]))
            offset, out = end, out + n
    vision = _vision_rows(grids, pixels, vision_config, patch_buckets) if grids else None
    return {**arrays, "vision_inputs": vision}


def slot_length(tokens: int, capacity: int) -> int:
    """A response slot: the longest response rounded up to a multiple of max(16, capacity // 8), so a step's
    micro-batches take at most 8 slot sizes whatever the lengths."""
    quantum = max(16, -(-capacity // 8))
    return max(quantum, -(-max(tokens, 1) // quantum) * quantum)


def build_shared_prefix_micro_batch(
    groups: Sequence[Sequence[RolloutRef]],
    prompt_slot: int,
    response_slot: int,
    slots_per_row: int,
    vision_config: Any,
    pad_token_id: int,
    *,
    num_rows: int | None = None,
    patch_buckets: Sequence[int] | int | None = None,
) -> dict[str, Any]:
    """One row per group (rollouts of one prompt): input_ids, segment_ids (a `BranchedSegments` of the slot
    layout), position_ids [3, B, L], vision_inputs (each group's image once) and, over the response window:
    target_positions, targets, response_mask, rollout_logprobs, advantages. The window holds a row's responses
    back to back (not in their slots: the LM head runs on real tokens, not on slot padding), its width bucketed by
    `response_window` over the n * R slot tokens. `num_rows` pads with empty rows."""
    slots = (int(prompt_slot),) + (int(response_slot),) * int(slots_per_row)
    length = sum(slots)
    window = response_window(max((sum(ref.response_length for ref in g) for g in groups), default=1),
                             slots_per_row * response_slot)  # fmt: skip
    count = num_rows or len(groups)
    arrays = _windowed_rows(count, length, window, pad_token_id)
    ids, segments, positions, target_positions, targets, response_mask, rollout_logprobs, advantages = arrays.values()
    grids, pixels = [], []
    for b, group in enumerate(groups):
        if len(group) > slots_per_row:
            raise ValueError(f"group {b} has {len(group)} rollouts for {slots_per_row} response slots")
        first = group[0]
        p, prompts = first.prompt_index, first.prompts
        if any(ref.prompts is not prompts or ref.prompt_index != p for ref in group):
            raise ValueError(f"shared-prefix row {b} mixes prompts: a row holds one group")
        real = prompts.attention_mask[p] > 0
        prompt_len = int(real.sum())
        if prompt_len > prompt_slot:
            raise ValueError(f"a prompt of {prompt_len} tokens does not fit a prompt slot of {prompt_slot}")
        ids[b, prompt_slot - prompt_len : prompt_slot] = prompts.input_ids[p][real]
        segments[b, prompt_slot - prompt_len : prompt_slot] = 1
        positions[:, b, prompt_slot - prompt_len : prompt_slot] = prompts.position_ids[:, p][:, real]
        out = 0
        for j, ref in enumerate(group):
            n = ref.response_length
            if n > response_slot:
                raise ValueError(f"a response of {n} tokens does not fit a response slot of {response_slot}")
            start = prompt_slot + j * response_slot
            ids[b, start : start + n] = ref.samples.tokens[ref.row, :n]
            segments[b, start : start + n] = 1
            positions[:, b, start : start + n] = prompts.next_positions[p] + np.arange(n)
            # token 0 is predicted by the prompt's last position, shared by all slots; token t by its own t - 1
            target_positions[b, out : out + n] = np.concatenate([[prompt_slot - 1], start + np.arange(n - 1)])[:n]
            targets[b, out : out + n] = ref.samples.tokens[ref.row, :n]
            response_mask[b, out : out + n] = 1.0
            rollout_logprobs[b, out : out + n] = ref.samples.logprobs[ref.row, :n]
            advantages[b, out : out + n] = ref.advantage
            out += n
        grid = np.asarray(first.raw[p].get("image_grid_thw", np.zeros((0, 3)))).reshape(-1, 3)
        if len(grid):  # the group's image once: its prompt appears once in the row
            grids.append(grid)
            pixels.append(np.asarray(first.raw[p]["pixel_values"]))
    vision = _vision_rows(grids, pixels, vision_config, patch_buckets) if grids else None
    return {**arrays, "segment_ids": BranchedSegments(segments, slots), "vision_inputs": vision}


def _windowed_rows(count: int, length: int, window: int, pad_token_id: int) -> dict[str, np.ndarray]:
    """The zeroed arrays of `count` rows of `length` tokens with a response window of `window` tokens, in the order
    the packed and shared-prefix builders unpack them (both fill them in place)."""
    return {
        "input_ids": np.full((count, length), pad_token_id, np.int32),
        "segment_ids": np.zeros((count, length), np.int32),
        "position_ids": np.zeros((3, count, length), np.int32),
        "target_positions": np.zeros((count, window), np.int32),
        "targets": np.full((count, window), pad_token_id, np.int32),
        "response_mask": np.zeros((count, window), np.float32),
        "rollout_logprobs": np.zeros((count, window), np.float32),
        "advantages": np.zeros((count, window), np.float32),
    }


def _vision_rows(grids: list[np.ndarray], pixels: list[np.ndarray], vision_config: Any, patch_buckets: Any) -> Any:
    """One micro-batch's images, in row order, as vision rows sized by the largest image (one segment per image)."""
    return prepare_vision_rows(np.concatenate(grids), np.concatenate(pixels), vision_config, row_lengths=patch_buckets)
