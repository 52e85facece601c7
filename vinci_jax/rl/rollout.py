"""Rollouts with rendered rewards: sample on device, render on CPU workers, score on device.

Prompts are sampled in chunks. As soon as a chunk's responses are decoded, their code goes to the render pool
(futures), and the next chunk is sampled while the pool renders: a step costs about max(device time, render time)
instead of their sum. The pool's own bounded queue gives back-pressure; a timeout or a crashed worker comes back as
a failed RenderResult, which the reward turns into the failed-render score (0.1), so no rollout is ever lost or
waited on forever.

With the paged engine (`config.rollout.engine=paged`, the default) or vLLM (`vllm`) a chunk's rollouts are
streamed: each goes to the render pool the moment it finishes, while the rest of the chunk still decodes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import jax
import numpy as np
from PIL import Image

from renderers import RenderResult
from vinci_jax.sampling import PromptBatch, SampleOutput, Sampler, SamplingParams, make_prompt_batch
from vinci_jax.sampling.engine import ENGINES, Engine, EngineConfig, collect_rows


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
    render_languages: list[str | None] = dataclasses.field(default_factory=list)  # per row, None: not rendered here

    @property
    def response_lengths(self) -> np.ndarray:
        return np.concatenate([c.samples.lengths for c in self.chunks])


def sample_render_score(
    sampler: Sampler | Engine,
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
    renders_here: Callable[[int, int], bool] | None = None,
) -> Rollouts:
    """Sample n responses per prompt in chunks, render them on `pool` while the next chunk samples, score all.

    In a multi-process run every process passes the same prompts (the global batch) and samples them together;
    `renders_here(row, prompt)` says which rollouts this process renders and scores on its own pool and devices.
    The scores are then exchanged, so every process returns the same rewards (render results stay local).
    """
    render_options = dict(render_options or {})
    renders_here = renders_here or (lambda row, prompt: True)
    chunks, responses, futures, languages = [], [], [], []
    device_s = 0.0
    for index, start in enumerate(range(0, len(raw_prompts), chunk_prompts)):
        raw = list(raw_prompts[start : start + chunk_prompts])
        prompts = make_prompt_batch(raw, model_config, processor.pad_token_id, patch_buckets=patch_buckets)
        base = len(responses)
        rows = prompts.batch_size * params.n
        responses.extend([""] * rows)
        futures.extend([None] * rows)
        languages.extend([None] * rows)

        def submit(row: int, ids: np.ndarray, finished: bool, prompt: int, base: int = base) -> None:
            text = processor.decode(ids[:-1] if finished else ids)
            responses[base + row] = text
            if not renders_here(base + row, prompt):
                futures[base + row] = _ELSEWHERE
                return
            # the reward's own extraction rules decide what is rendered (language from the prompt, last block)
            job = reward.render_jobs([prompt_texts[prompt]], [text], render_options)[0]
            futures[base + row] = None if job is None else pool.submit(job)
            languages[base + row] = None if job is None else job.language

        began = time.perf_counter()
        if isinstance(sampler, Engine) or hasattr(sampler, "generate_raw"):  # rendered as soon as each finishes
            row_keys = jax.random.split(jax.random.fold_in(key, index), rows)
            done = []
            # vLLM takes the processor's per-prompt outputs, not our padded batch
            for out in sampler.stream(prompts if isinstance(sampler, Engine) else raw, params, row_keys):
                submit(out.row, out.tokens, out.finished, start + out.prompt)
                done.append(out)
            samples = collect_rows(done, prompts.batch_size, params, sampler.pad_token_id)
            device_s += time.perf_counter() - began
        else:
            samples = sampler.generate(prompts, params, jax.random.fold_in(key, index))
            device_s += time.perf_counter() - began
            for row in range(rows):
                submit(row, samples.response_ids(row), bool(samples.finished[row]),
                       start + int(samples.prompt_index[row]))  # fmt: skip
        chunks.append(Chunk(start, raw, prompts, samples))
    began = time.perf_counter()
    results = [None if f is None or f is _ELSEWHERE else _result(f) for f in futures]
    render_wait_s = time.perf_counter() - began

    prompt_of_row = np.concatenate([c.start + c.samples.prompt_index for c in chunks])
    mine = [r for r, f in enumerate(futures) if f is not _ELSEWHERE]
    scored = reward.score(
        [prompt_texts[prompt_of_row[r]] for r in mine],
        [responses[r] for r in mine],
        [target_images[prompt_of_row[r]] for r in mine],
        [results[r] for r in mine],
        [group_ids[prompt_of_row[r]] for r in mine],
    ) if mine else None  # fmt: skip
    rewards, terms, statuses = _gather_scores(len(responses), mine, scored)
    return Rollouts(
        chunks=chunks,
        responses=responses,
        prompt_of_row=prompt_of_row,
        rewards=rewards,
        terms=terms,
        statuses=statuses,
        render_results=results,
        device_s=device_s,
        render_wait_s=render_wait_s,
        render_languages=languages,
    )


_ELSEWHERE = object()  # a rollout another process renders and scores


def rollout_sampler(rollout: Any, model: Any, stop_ids: tuple[int, ...], pad_id: int) -> Sampler | Engine:
    """`config.rollout.engine`: "paged" (continuous batching, streamed rollouts) or "lockstep" (the reference)."""
    kind = str(rollout.get("engine", "paged"))
    if kind not in ENGINES:
        raise ValueError(f"rollout.engine={kind!r}; choose one of {ENGINES}")
    if kind == "lockstep":
        return Sampler(model, stop_ids, pad_id)
    paged = dict(rollout.get("paged", {}))
    return Engine(model, stop_ids, pad_id, EngineConfig(**paged))

RENDER_ON = ("owner", "spread")  # config.rollout.render_on


def render_assignment(mode: str, owners: np.ndarray) -> Callable[[int, int], bool]:
    """`renders_here(row, prompt)` for this process. `owner`: each group stays on the process that loaded its prompt
    (`owners[prompt]`; host-local groups). `spread`: rollout rows are dealt round-robin over the processes, so every
    group is scored on several hosts; its advantages are right because scores are exchanged before they are used."""
    me, count = jax.process_index(), jax.process_count()
    if mode == "owner":
        return lambda row, prompt: int(owners[prompt]) == me
    if mode == "spread":
        return lambda row, prompt: row % count == me
    raise ValueError(f"render_on={mode!r}; choose one of {RENDER_ON}")


def _gather_scores(rows: int, mine: Sequence[int], scored: Any) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Every process's scores of the rows it rendered, merged into full per-row arrays (same on all processes)."""
    from vinci_jax import multihost

    local = (
        list(mine),
        [] if scored is None else np.asarray(scored.total, np.float32),
        {} if scored is None else {k: np.asarray(v) for k, v in scored.terms.items()},
        [] if scored is None else list(scored.statuses),
    )
    rewards = np.zeros(rows, np.float32)
    terms: dict[str, np.ndarray] = {}
    statuses = [""] * rows
    seen = np.zeros(rows, bool)
    for part_rows, part_rewards, part_terms, part_statuses in multihost.allgather_objects(local):
        index = np.asarray(part_rows, np.int64)
        rewards[index] = part_rewards
        for name, values in part_terms.items():
            terms.setdefault(name, np.zeros(rows, np.asarray(values).dtype))[index] = values
        for r, status in zip(part_rows, part_statuses, strict=True):
            statuses[r] = status
        seen[index] = True
    if not seen.all():
        raise RuntimeError(f"rollouts {np.flatnonzero(~seen).tolist()} were scored by no process")
    return rewards, terms, statuses


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
