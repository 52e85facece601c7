"""Rollouts with rendered rewards: sample on device, render on CPU workers, score on device.

Prompts are sampled in chunks. As soon as a chunk's responses are decoded, their code goes to the render pool
(futures), and the next chunk is sampled while the pool renders: a step costs about max(device time, render time)
instead of their sum. The pool's own bounded queue gives back-pressure; a timeout or a crashed worker comes back as
a failed RenderResult, which the reward turns into the failed-render score (0.1), so no rollout is ever lost or
waited on forever.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import jax
import numpy as np
from PIL import Image

from renderers import RenderResult
from vinci_jax.sampling import PromptBatch, SampleOutput, Sampler, SamplingParams, make_prompt_batch


@dataclasses.dataclass
class Chunk:
    """One sampled chunk: prompts `start:start+len(raw)` of the step, their device batch and samples."""

    start: int
    raw: list[dict[str, np.ndarray]]
    prompts: PromptBatch
    samples: SampleOutput


@dataclasses.dataclass
class Rollouts:
    """All rollouts of a step, grouped by prompt (rows of prompt i are contiguous, n per prompt)."""

    chunks: list[Chunk]
    responses: list[str]
    prompt_of_row: np.ndarray
    rewards: np.ndarray
    terms: dict[str, np.ndarray]
    statuses: list[str]
    render_results: list[RenderResult | None]
    device_s: float
    render_wait_s: float

    @property
    def response_lengths(self) -> np.ndarray:
        return np.concatenate([c.samples.lengths for c in self.chunks])


def sample_render_score(
    sampler: Sampler,
    processor: Any,
    model_config: Any,
    raw_prompts: Sequence[dict[str, np.ndarray]],
    prompt_texts: Sequence[str],
    target_images: Sequence[Image.Image],
    group_ids: Sequence[int],
    params: SamplingParams,
    key: jax.Array,
    pool: Any,
    reward: Any,
    *,
    chunk_prompts: int,
    render_options: dict[str, Any] | None = None,
    patch_buckets: Sequence[int] | int | None = None,
) -> Rollouts:
    """Sample n responses per prompt in chunks, render them on `pool` while the next chunk samples, score all."""
    render_options = dict(render_options or {})
    chunks, responses, futures = [], [], []
    device_s = 0.0
    for index, start in enumerate(range(0, len(raw_prompts), chunk_prompts)):
        raw = list(raw_prompts[start : start + chunk_prompts])
        prompts = make_prompt_batch(raw, model_config, processor.pad_token_id, patch_buckets=patch_buckets)
        began = time.perf_counter()
        samples = sampler.generate(prompts, params, jax.random.fold_in(key, index))
        device_s += time.perf_counter() - began
        chunks.append(Chunk(start, raw, prompts, samples))
        for row in range(samples.tokens.shape[0]):
            ids = samples.response_ids(row)
            text = processor.decode(ids[:-1] if samples.finished[row] else ids)
            responses.append(text)
            # the reward's own extraction rules decide what is rendered (language from the prompt, last block)
            job = reward.render_jobs([prompt_texts[start + samples.prompt_index[row]]], [text], render_options)[0]
            futures.append(None if job is None else pool.submit(job))
    began = time.perf_counter()
    results = [None if f is None else _result(f) for f in futures]
    render_wait_s = time.perf_counter() - began

    prompt_of_row = np.concatenate([c.start + c.samples.prompt_index for c in chunks])
    scored = reward.score(
        [prompt_texts[p] for p in prompt_of_row],
        responses,
        [target_images[p] for p in prompt_of_row],
        results,
        [group_ids[p] for p in prompt_of_row],
    )
    return Rollouts(
        chunks=chunks,
        responses=responses,
        prompt_of_row=prompt_of_row,
        rewards=np.asarray(scored.total, np.float32),
        terms={k: np.asarray(v) for k, v in scored.terms.items()},
        statuses=list(scored.statuses),
        render_results=results,
        device_s=device_s,
        render_wait_s=render_wait_s,
    )


def _result(future: Future) -> RenderResult:
    """The pool enforces per-job timeouts itself; anything it raises still becomes a failed render here."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - a broken future must not stall or drop the rollout
        return RenderResult(status="crashed", png=None, error=f"{type(err).__name__}: {err}", seconds=0.0)


def summarize(rollouts: Rollouts, domains: Sequence[str]) -> dict[str, float]:
    """Mean reward terms, execution and format rates, response length: overall and per domain."""
    out: dict[str, float] = {}
    rows_domain = np.asarray([domains[p] for p in rollouts.prompt_of_row])
    lengths = rollouts.response_lengths
    for name, select in [("all", np.ones(len(rows_domain), bool))] + [
        (d, rows_domain == d) for d in sorted(set(domains))
    ]:
        if not select.any():
            continue
        prefix = "" if name == "all" else f"{name}/"
        out[f"{prefix}reward"] = float(rollouts.rewards[select].mean())
        for term, values in rollouts.terms.items():
            out[f"{prefix}{term}"] = float(np.asarray(values, np.float64)[select].mean())
        out[f"{prefix}response_len"] = float(lengths[select].mean())
    return out
