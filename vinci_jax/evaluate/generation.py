"""Greedy generation of responses for EvalSamples (the rollout engine, or the lockstep reference sampler: the same
responses), and code extraction from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from renderers import extract_code
from vinci_jax.evaluate.samples import EvalSample


def generate_responses(
    model: Any,
    processor: Any,
    samples: Sequence[EvalSample],
    *,
    max_new_tokens: int = 2048,
    batch_size: int = 8,
    engine: str = "lockstep",
) -> list[str]:
    """One greedy response per sample (batched; the prompt is the sample's user turn with its target image).
    `engine`: "paged" (the rollout engine: each row's cache holds only the pages it wrote, and a finished row stops
    being computed) or "lockstep" (the reference sampler); both give the same responses."""
    from vinci_jax.sampling import SamplingParams, make_prompt_batch
    from vinci_jax.sampling.engine import make_generator

    stops = (processor.im_end_token_id, processor.pad_token_id)
    sampler = make_generator(engine, model, stops, processor.pad_token_id)
    params = SamplingParams(n=1, max_new_tokens=max_new_tokens, greedy=True)
    responses: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        prompts = []
        for s in chunk:
            image = s.target_image()
            if image is None:
                raise ValueError(f"sample {s.id!r} has no target image to show the model")
            prompts.append(processor([{"role": "user", "content": s.prompt}], [image], add_generation_prompt=True))
        batch = make_prompt_batch(prompts, model.config, processor.pad_token_id)
        out = sampler.generate(batch, params)
        for row in range(out.tokens.shape[0]):
            ids = out.response_ids(row)
            responses.append(processor.decode(ids[:-1] if out.finished[row] else ids))
    return responses


def codes_from_responses(samples: Sequence[EvalSample], responses: Sequence[str]) -> list[str | None]:
    """The last fenced block in each sample's language (the reward's rule), None when there is none."""
    return [extract_code(r, s.language) for s, r in zip(samples, responses, strict=True)]
