"""Rollout benchmark: the paged continuous-batching engine against the lockstep sampler and transformers `generate`
on long-tailed response lengths.

The same small random Qwen2.5-VL (`bench.sampler`'s model, one image per prompt) samples B prompts x n rollouts;
each rollout's length is drawn from a lognormal (median `--median`, clipped to `--max_len`) and the row is ended
there by a forced stop (a per-row length limit), so all three do the same useful work. Rounds are interleaved
(engine, lockstep, transformers, engine, ...) after one warm-up round each (compilation), since the machine is
shared. Reports useful tokens/s (tokens that belong to a response), slot utilisation (useful tokens / decode
slots computed) and wall per round, as medians, with the load average beside them; the last line is JSON with
top-level `engine_vs_<other>` wall ratios. Contenders are a registry (`CONTENDERS`, `--engines a,b,c`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from vinci_jax.bench.sampler import SMALL, _build_hf_model, _prompts


def draw_lengths(rng: np.random.Generator, rows: int, median: int, max_len: int, sigma: float) -> np.ndarray:
    """Lognormal response lengths with the given median, clipped to [1, max_len]; the longest row is set to
    max_len so every round has the full tail."""
    lengths = np.clip(np.round(median * np.exp(sigma * rng.standard_normal(rows))), 1, max_len).astype(np.int64)
    lengths[np.argmax(lengths)] = max_len
    return lengths


@dataclasses.dataclass
class RolloutSetup:
    """What every contender decodes: the same model (ours and its transformers twin), prompts, keys and lengths."""

    args: argparse.Namespace
    model: Any  # our Qwen2.5-VL
    torch_model: Any  # the same weights in transformers
    model_dir: str  # the same weights as an HF directory (for engines that load a checkpoint)
    prompts: list[dict]
    batch: Any  # PromptBatch
    params: Any  # SamplingParams
    keys: jax.Array
    limits: np.ndarray  # per-row response lengths (forced stops)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # contenders' own figures for the report

    @property
    def rows(self) -> int:
        return int(self.limits.shape[0])

    @property
    def useful(self) -> int:
        return int(self.limits.sum())


def _engine(setup: RolloutSetup) -> Callable[[], float]:
    from vinci_jax.sampling.engine import Engine, EngineConfig

    a = setup.args
    config = EngineConfig(slots=a.slots or setup.rows, page_size=a.page_size, steps_per_sync=a.steps_per_sync,
                          memory_budget_mb=a.memory_budget_mb, decode_dtype=a.decode_dtype,
                          prefill_prompts=a.prefill_prompts)  # fmt: skip
    engine = Engine(setup.model, NEVER, 0, config)

    def run() -> float:
        out = engine.generate_with_row_keys(setup.batch, setup.params, setup.keys, setup.limits)
        assert int(out.lengths.sum()) == setup.useful
        st = engine.stats
        setup.stats["engine"] = {"slots": config.slots, "page_size": config.page_size,
                                 "steps_per_sync": config.steps_per_sync, "decode_dtype": config.decode_dtype,
                                 "prefill_prompts": config.prefill_prompts, "prefills": st.prefills,
                                 "bursts": st.bursts, "computed_slots": st.computed_slots,
                                 "preemptions": st.preemptions, "peak_pages": st.peak_pages}  # fmt: skip
        return st.slot_utilisation

    return run


def _lockstep(setup: RolloutSetup) -> Callable[[], float]:
    from vinci_jax.sampling import Sampler

    sampler = Sampler(setup.model, NEVER, 0)

    def run() -> float:
        out = sampler.generate_with_row_keys(setup.batch, setup.params, setup.keys, setup.limits)
        assert int(out.lengths.sum()) == setup.useful
        return setup.useful / (setup.rows * int(out.lengths.max()))

    return run


def _transformers(setup: RolloutSetup) -> Callable[[], float]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    limits = torch.as_tensor(setup.limits)
    n, batch = setup.args.n, setup.batch

    class RowLimits(StoppingCriteria):
        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            return torch.as_tensor(input_ids.shape[1] - self.start >= limits)

    pixels = torch.as_tensor(np.concatenate([p["pixel_values"] for p in setup.prompts]))
    grids = torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in setup.prompts]))
    ids = np.repeat(batch.input_ids, n, axis=0)

    def run() -> float:
        with torch.no_grad():
            setup.torch_model.generate(
                input_ids=torch.as_tensor(ids, dtype=torch.long),
                attention_mask=torch.as_tensor(np.repeat(batch.attention_mask, n, axis=0), dtype=torch.long),
                pixel_values=_repeat_images(pixels, grids, n),
                image_grid_thw=grids.repeat_interleave(n, 0),
                mm_token_type_ids=torch.as_tensor(ids == SMALL["vocab"] - 10, dtype=torch.int32),
                max_new_tokens=setup.args.max_len, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                stopping_criteria=StoppingCriteriaList([RowLimits(ids.shape[1])]), eos_token_id=None, pad_token_id=0,
            )  # fmt: skip
        return setup.useful / (setup.rows * int(setup.limits.max()))

    return run


# name -> builder(setup) -> one timed round, returning the round's slot utilisation (useful / computed decode
# slots). `--engines` picks from these; another backend registers itself here (e.g. CONTENDERS["vllm"] = ...).
def _vllm(setup: RolloutSetup) -> Callable[[], float]:
    """vLLM's CPU build in its own venv (`make setup-vllm`), driven as a worker process (bench/rollout_vllm.py)."""
    from vinci_jax.bench import rollout_vllm

    return rollout_vllm.contender(setup)


CONTENDERS: dict[str, Callable[[RolloutSetup], Callable[[], float]]] = {
    "engine": _engine,
    "paged": _engine,  # the name for the engine (`rollout.engine=paged`)
    "lockstep": _lockstep,
    "transformers": _transformers,
    "vllm": _vllm,
}
NEVER = (-1,)  # no real stop token: rows end at their drawn lengths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--median", type=int, default=64)
    parser.add_argument("--max_len", type=int, default=1024)
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape of the response lengths")
    parser.add_argument("--text_len", type=int, default=32, help="text tokens per prompt (plus the image tokens)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each contender (after a warm-up)")
    parser.add_argument(
        "--engines",
        default="engine,lockstep,transformers",
        help=f"comma-separated contenders, timed in this order each round; known: {sorted(CONTENDERS)}",
    )
    parser.add_argument("--slots", type=int, default=0, help="engine decode slots (0: prompts x n)")
    parser.add_argument("--page_size", type=int, default=16)
    parser.add_argument("--steps_per_sync", type=int, default=8)
    parser.add_argument("--memory_budget_mb", type=float, default=256.0)
    parser.add_argument("--decode_dtype", default="auto", help="the engine's decode copy (auto: float32 on CPU)")
    parser.add_argument("--prefill_prompts", type=int, default=4, help="engine prompts per prefill call")
    parser.add_argument("--skip_transformers", action="store_true", help="drop transformers from --engines")
    args = parser.parse_args(argv)
    names = [name for name in args.engines.split(",") if name and not (args.skip_transformers and
                                                                       name == "transformers")]  # fmt: skip
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown --engines {unknown}; known: {sorted(CONTENDERS)}")

    from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
    from vinci_jax.sampling import SamplingParams, make_prompt_batch

    rng = np.random.default_rng(0)
    grid = (1, 8, 8)
    with tempfile.TemporaryDirectory() as tmp:
        torch_model = _build_hf_model(tmp)
        model = load_qwen2_5_vl(tmp)
        prompts = _prompts(rng, args.prompts, args.text_len, grid)
        batch = make_prompt_batch(prompts, model.config, 0)
        rows = args.prompts * args.n
        limits = draw_lengths(rng, rows, args.median, args.max_len, args.sigma)
        params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_len)
        keys = jax.random.split(jax.random.key(0), rows)
        setup = RolloutSetup(args, model, torch_model, tmp, prompts, batch, params, keys, limits)
        contenders = {name: CONTENDERS[name](setup) for name in names}
        for run in contenders.values():  # warm-up: compilation, first-touch
            run()
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        utilisation: dict[str, float] = {}
        load = []
        for _ in range(args.rounds):  # interleaved, since the machine is shared
            for name, run in contenders.items():
                start = time.perf_counter()
                utilisation[name] = run()
                walls[name].append(time.perf_counter() - start)
            load.append(os.getloadavg()[0])
    useful = setup.useful
    wall = {name: statistics.median(w) for name, w in walls.items()}
    result = {
        "benchmark": "rollout",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "load_average": list(os.getloadavg()),
        "load_average_1m_per_round": load,
        "model": SMALL,
        "prompts": args.prompts,
        "n": args.n,
        "lengths": {"median": float(np.median(limits)), "max": int(limits.max()), "useful_tokens": useful},
        **setup.stats,
        "rounds": args.rounds,
        "wall_s": wall,
        "wall_s_per_round": walls,
        "useful_tokens_per_s": {name: useful / w for name, w in wall.items()},
        "slot_utilisation": utilisation,
    }
    for other in wall:
        if other != "engine" and "engine" in wall:
            result[f"engine_vs_{other}"] = wall[other] / wall["engine"]
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
