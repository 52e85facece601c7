"""Rollout benchmark: the paged continuous-batching engine against the lockstep sampler and transformers `generate`
on long-tailed response lengths.

The same small random Qwen2.5-VL (`bench.sampler`'s model, one image per prompt) samples B prompts x n rollouts;
each rollout's length is drawn from a lognormal (median `--median`, clipped to `--max_len`) and the row is ended
there by a forced stop (a per-row length limit), so all three do the same useful work. Rounds are interleaved
(engine, lockstep, transformers, engine, ...) after one warm-up round each (compilation), since the machine is
shared. Reports useful tokens/s (tokens that belong to a response), slot utilisation (useful tokens / decode
slots computed) and wall per round, as medians; the last line is JSON with top-level `engine_vs_lockstep`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from vinci_jax.bench.sampler import SMALL, _build_hf_model, _prompts


def draw_lengths(rng: np.random.Generator, rows: int, median: int, max_len: int, sigma: float) -> np.ndarray:
    """Lognormal response lengths with the given median, clipped to [1, max_len]; the longest row is set to
    max_len so every round has the full tail."""
    lengths = np.clip(np.round(median * np.exp(sigma * rng.standard_normal(rows))), 1, max_len).astype(np.int64)
    lengths[np.argmax(lengths)] = max_len
    return lengths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--median", type=int, default=64)
    parser.add_argument("--max_len", type=int, default=1024)
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape of the response lengths")
    parser.add_argument("--text_len", type=int, default=32, help="text tokens per prompt (plus the image tokens)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each contender (after a warm-up)")
    parser.add_argument("--slots", type=int, default=0, help="engine decode slots (0: prompts x n)")
    parser.add_argument("--page_size", type=int, default=16)
    parser.add_argument("--steps_per_sync", type=int, default=8)
    parser.add_argument("--memory_budget_mb", type=float, default=256.0)
    parser.add_argument("--skip_transformers", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
    from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch
    from vinci_jax.sampling.engine import Engine, EngineConfig

    rng = np.random.default_rng(0)
    grid = (1, 8, 8)
    with tempfile.TemporaryDirectory() as tmp:
        torch_model = _build_hf_model(tmp)
        model = load_qwen2_5_vl(tmp)
    prompts = _prompts(rng, args.prompts, args.text_len, grid)
    batch = make_prompt_batch(prompts, model.config, 0)
    rows = args.prompts * args.n
    limits = draw_lengths(rng, rows, args.median, args.max_len, args.sigma)
    useful = int(limits.sum())
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_len)
    keys = jax.random.split(jax.random.key(0), rows)
    never = (-1,)  # no real stop token: rows end at their drawn lengths
    sampler = Sampler(model, never, 0)
    config = EngineConfig(slots=args.slots or rows, page_size=args.page_size, steps_per_sync=args.steps_per_sync,
                          memory_budget_mb=args.memory_budget_mb)  # fmt: skip
    engine = Engine(model, never, 0, config)

    def run_engine() -> float:
        out = engine.generate_with_row_keys(batch, params, keys, limits)
        assert int(out.lengths.sum()) == useful
        return engine.stats.slot_utilisation

    def run_lockstep() -> float:
        out = sampler.generate_with_row_keys(batch, params, keys, limits)
        assert int(out.lengths.sum()) == useful
        return useful / (rows * int(out.lengths.max()))

    class RowLimits(StoppingCriteria):
        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            return torch.as_tensor(input_ids.shape[1] - self.start >= torch_limits)

    torch_limits = torch.as_tensor(limits)
    pixels = torch.as_tensor(np.concatenate([p["pixel_values"] for p in prompts]))
    grids = torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in prompts]))

    def run_transformers() -> float:
        ids = np.repeat(batch.input_ids, args.n, axis=0)
        with torch.no_grad():
            torch_model.generate(
                input_ids=torch.as_tensor(ids, dtype=torch.long),
                attention_mask=torch.as_tensor(np.repeat(batch.attention_mask, args.n, axis=0), dtype=torch.long),
                pixel_values=_repeat_images(pixels, grids, args.n),
                image_grid_thw=grids.repeat_interleave(args.n, 0),
                mm_token_type_ids=torch.as_tensor(ids == SMALL["vocab"] - 10, dtype=torch.int32),
                max_new_tokens=args.max_len, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                stopping_criteria=StoppingCriteriaList([RowLimits(ids.shape[1])]), eos_token_id=None, pad_token_id=0,
            )  # fmt: skip
        return useful / (rows * int(limits.max()))

    contenders = {"engine": run_engine, "lockstep": run_lockstep}
    if not args.skip_transformers:
        contenders["transformers"] = run_transformers
    for run in contenders.values():  # warm-up: compilation, first-touch
        run()
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    utilisation: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            utilisation[name] = run()
            walls[name].append(time.perf_counter() - start)
    wall = {name: statistics.median(w) for name, w in walls.items()}
    result = {
        "benchmark": "rollout",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "load_average": list(os.getloadavg()),
        "model": SMALL,
        "prompts": args.prompts,
        "n": args.n,
        "lengths": {"median": float(np.median(limits)), "max": int(limits.max()), "useful_tokens": useful},
        "engine": {"slots": config.slots, "page_size": config.page_size, "steps_per_sync": config.steps_per_sync,
                   "preemptions": engine.stats.preemptions, "peak_pages": engine.stats.peak_pages},  # fmt: skip
        "wall_s": wall,
        "useful_tokens_per_s": {name: useful / w for name, w in wall.items()},
        "slot_utilisation": utilisation,
        "engine_vs_lockstep": wall["lockstep"] / wall["engine"],
    }
    if "transformers" in wall:
        result["engine_vs_transformers"] = wall["transformers"] / wall["engine"]
    print(", ".join(f"{k} {v:.1f} tok/s" for k, v in result["useful_tokens_per_s"].items()))
    return result


def _repeat_images(pixels, grids, n: int):
    """Each prompt's patches repeated n times in row order (the rows of a group are adjacent)."""
    import torch

    sizes = (grids[:, 0] * grids[:, 1] * grids[:, 2]).tolist()
    parts = torch.split(pixels, sizes)
    return torch.cat([p for p in parts for _ in range(n)])


if __name__ == "__main__":
    print(json.dumps(main()))
