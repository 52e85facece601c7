"""GRPO update throughput, padded rows (one rollout per row, powers of two) vs packed rows (first-fit, segment ids).

`python -m vinci_jax.bench grpo_update [--steps 4] [--prompts 4] [--n 4] [--max_new_tokens 192]`

The CPU demo's shapes by default: a tiny Qwen2.5-VL (real 151,936-token vocabulary) with random weights, 4 prompts
of one 112 x 112 image (16 image tokens) and ~48 text tokens, 4 rollouts each, responses of 8 to 192 tokens drawn
afresh every step (as sampling would). Both layouts run the same rollouts through the real GRPOUpdater; the
first two steps (compilation; the second sees the committed parameters the first apply returns) are reported
apart, and the timed steps include whatever compiles new shapes cost (a padded micro-batch's window follows its
longest response). Figures: seconds per update and response tokens per second, in wall time and in this process's
CPU time (all threads; the steadier figure on a shared machine).
The JSON object is the last line of output.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

PAD, IMAGE, VSTART, VEND = 151643, 151655, 151652, 151653
WARMUP = 2


def _rollouts(rng: np.random.Generator, model_config: Any, prompts: int, n: int, max_new: int) -> Any:
    from vinci_jax.rl.rollout import Chunk, Rollouts
    from vinci_jax.sampling import SampleOutput, make_prompt_batch

    raw = []
    for _ in range(prompts):
        text = rng.integers(0, 150_000, int(rng.integers(40, 56)))
        raw.append({
            "input_ids": np.asarray([VSTART, *[IMAGE] * 16, VEND, *text], np.int32),
            "pixel_values": rng.normal(size=(64, 3 * 2 * 14 * 14)).astype(np.float32),
            "image_grid_thw": np.asarray([[1, 8, 8]], np.int64),
        })  # fmt: skip
    batch = make_prompt_batch(raw, model_config, PAD)
    rows = prompts * n
    lengths = rng.integers(8, max_new + 1, rows)
    live = np.arange(max_new)[None] < lengths[:, None]
    samples = SampleOutput(
        tokens=np.where(live, rng.integers(0, 150_000, (rows, max_new)), PAD).astype(np.int32),
        logprobs=np.where(live, -rng.uniform(0.1, 3.0, (rows, max_new)), 0.0).astype(np.float32),
        lengths=lengths.astype(np.int32), finished=np.ones(rows, bool),
        prompt_index=np.repeat(np.arange(prompts), n).astype(np.int32),
    )  # fmt: skip
    return Rollouts(
        chunks=[Chunk(0, raw, batch, samples)], responses=[""] * rows, prompt_of_row=samples.prompt_index,
        rewards=rng.uniform(0, 1, rows).astype(np.float32), terms={}, statuses=["ok"] * rows,
        render_results=[None] * rows, device_s=0.0, render_wait_s=0.0,
    )  # fmt: skip


def run(layout: str, steps: list[Any], n: int, micro_batch_rows: int, logit_chunk: int) -> dict[str, Any]:
    import jax
    import optax
    from flax import nnx

    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
    from vinci_jax.rl.grpo_step import GRPOLossConfig
    from vinci_jax.rl.updater import GRPOUpdater
    from vinci_jax.train import train_state as ts

    model = Qwen25VLForConditionalGeneration(Qwen25VLConfig.tiny(), rngs=nnx.Rngs(0))
    split = ts.split_model(model)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    optimizer = optax.adamw(1e-5)
    updater = GRPOUpdater(
        split, optimizer, optax.constant_schedule(1e-5), jax.tree.map(lambda _: True, split.params),
        GRPOLossConfig(logit_chunk=logit_chunk), mesh, group_size=n,
        micro_batch_rows=micro_batch_rows, vision_config=model.config.vision, pad_token_id=PAD, layout=layout,
    )  # fmt: skip
    state = ts.init_train_state(split.params, optimizer)
    times, cpu, tokens, micro = [], [], [], []
    for rollouts in steps:
        began, began_cpu = time.perf_counter(), time.process_time()
        state, metrics = updater.update(state, rollouts)
        jax.block_until_ready(state["params"])
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        tokens.append(metrics["response_tokens"])
        micro.append(metrics["micro_batches"])
    timed, timed_tokens = times[WARMUP:], tokens[WARMUP:]
    return {
        "warmup_s": round(sum(times[:WARMUP]), 3),
        "update_s": round(float(np.mean(timed)), 3),
        "response_tokens_per_s": round(float(np.sum(timed_tokens) / np.sum(timed)), 1),
        "update_cpu_s": round(float(np.mean(cpu[WARMUP:])), 3),
        "response_tokens_per_cpu_s": round(float(np.sum(timed_tokens) / np.sum(cpu[WARMUP:])), 1),
        "micro_batches_per_step": round(float(np.mean(micro)), 2),
        "compiled_shapes": len(updater.shapes),
        "grad_compiles": int(updater.grad_fn._cache_size()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench grpo_update", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed updates per layout (after two warm-up)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=192)
    parser.add_argument("--micro_batch_rows", type=int, default=16)
    parser.add_argument("--logit_chunk", type=int, default=0, help="LM-head chunk (0: whole window, the tiny preset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig

    rng = np.random.default_rng(args.seed)
    config = Qwen25VLConfig.tiny()
    steps = [_rollouts(rng, config, args.prompts, args.n, args.max_new_tokens) for _ in range(args.steps + WARMUP)]
    result: dict[str, Any] = {"bench": "grpo_update", "rollouts_per_step": args.prompts * args.n}
    for layout in ("padded", "packed"):
        result[layout] = run(layout, steps, args.n, args.micro_batch_rows, args.logit_chunk)
        print(f"{layout}: {result[layout]}", flush=True)
    for unit in ("s", "cpu_s"):
        key = f"response_tokens_per_{unit}"
        result[f"speedup_per_token_{unit}"] = round(result["packed"][key] / result["padded"][key], 3)
    return result
