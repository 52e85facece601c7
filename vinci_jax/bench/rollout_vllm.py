"""vLLM's side of the rollout-engine scoreboard: one timed round of a long-tailed batch through vLLM's offline API.

`vllm_round(model_dir, prompts, lengths)` is the entry the rollout bench (`vinci_jax.bench rollout --engines
...,vllm`) calls: request i continues prompt `i // (len(lengths) // len(prompts))` for exactly `lengths[i]` tokens
(stop tokens ignored), so every engine decodes the same work and useful tokens/s compare directly. The engine is
built once per (model_dir, max_model_len) and reused by later rounds, so interleaved rounds time decoding, not
start-up. Needs vLLM (.venv-vllm: `make setup-vllm`).

Standalone: `.venv-vllm/bin/python -m vinci_jax.bench rollout_vllm --model_dir DIR [--rounds 3]` on the issue's
batch shape (8 prompts x 4 samples, lognormal lengths, median 64, capped at 512); prints a JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from vinci_jax.sampling.vllm_backend import import_vllm

_ENGINES: dict[tuple[str, int], Any] = {}


def engine(model_dir: str, max_model_len: int, *, max_num_seqs: int = 64, gpu_memory_utilization: float = 0.15,
           dtype: str = "float32") -> Any:  # fmt: skip
    """A vLLM engine over `model_dir` (weights read from it), kept for later rounds."""
    key = (str(model_dir), int(max_model_len))
    if key not in _ENGINES:
        vllm = import_vllm()
        _ENGINES[key] = vllm.LLM(
            model=str(model_dir), dtype=dtype, max_model_len=int(max_model_len), max_num_seqs=int(max_num_seqs),
            gpu_memory_utilization=float(gpu_memory_utilization), enforce_eager=True, seed=0,
            limit_mm_per_prompt={"image": 4, "video": 0}, skip_tokenizer_init=True,
        )  # fmt: skip
    return _ENGINES[key]


def vllm_round(
    model_dir: str,
    prompts: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    *,
    images: Sequence[Any] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    max_num_seqs: int = 64,
    gpu_memory_utilization: float = 0.15,
) -> dict[str, Any]:
    """Decode `lengths[i]` tokens for request i (prompt i // samples_per_prompt); returns wall and tokens/s.

    `prompts` hold `input_ids` (image pads expanded when `images` gives each prompt's PIL images)."""
    vllm = import_vllm()
    if len(lengths) % len(prompts):
        raise ValueError(f"{len(lengths)} lengths is not a whole number of samples for {len(prompts)} prompts")
    per_prompt = len(lengths) // len(prompts)
    requests = []
    for i, p in enumerate(prompts):
        request: dict[str, Any] = {"prompt_token_ids": [int(t) for t in np.asarray(p["input_ids"])]}
        if images is not None and images[i]:
            request["multi_modal_data"] = {"image": list(images[i])}
        requests.append(request)
    longest_prompt = max(len(r["prompt_token_ids"]) for r in requests)
    llm = engine(model_dir, longest_prompt + int(max(lengths)), max_num_seqs=max_num_seqs,
                 gpu_memory_utilization=gpu_memory_utilization)  # fmt: skip
    sampling = [
        vllm.SamplingParams(temperature=temperature, max_tokens=int(n), min_tokens=int(n), ignore_eos=True,
                            seed=seed + i, detokenize=False)  # fmt: skip
        for i, n in enumerate(lengths)
    ]
    began = time.perf_counter()
    outputs = llm.generate([requests[i // per_prompt] for i in range(len(lengths))], sampling, use_tqdm=False)
    wall = time.perf_counter() - began
    useful = sum(len(o.outputs[0].token_ids) for o in outputs)
    if useful != int(sum(lengths)):
        raise RuntimeError(f"vLLM decoded {useful} tokens, {int(sum(lengths))} were asked for")
    return {"engine": "vllm", "useful_tokens": useful, "wall_s": wall, "useful_tokens_per_s": useful / wall,
            "requests": len(lengths), "longest": int(max(lengths))}  # fmt: skip


def long_tailed_lengths(count: int, median: int = 64, cap: int = 512, sigma: float = 1.0, seed: int = 0) -> list[int]:
    """Response lengths from a lognormal with this median, capped (the issue's batch)."""
    rng = np.random.default_rng(seed)
    return [int(min(cap, max(1, round(x)))) for x in rng.lognormal(np.log(median), sigma, count)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench rollout_vllm", description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="HF Qwen2.5-VL / Qwen3-VL dir (config.json + weights)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--prompt_len", type=int, default=64)
    parser.add_argument("--median", type=int, default=64)
    parser.add_argument("--cap", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    prompts = [{"input_ids": rng.integers(2, 1000, args.prompt_len)} for _ in range(args.prompts)]
    lengths = long_tailed_lengths(args.prompts * args.samples, args.median, args.cap)
    vllm_round(args.model_dir, prompts, lengths[:2])  # warm-up: engine start and first compile
    rounds = [vllm_round(args.model_dir, prompts, lengths, seed=r) for r in range(args.rounds)]
    return {
        "engine": "vllm",
        "useful_tokens": rounds[0]["useful_tokens"],
        "median_wall_s": statistics.median(r["wall_s"] for r in rounds),
        "median_useful_tokens_per_s": statistics.median(r["useful_tokens_per_s"] for r in rounds),
        "rounds": len(rounds),
    }
