"""GRPO update throughput in steady state: padded rows vs packed rows vs shared-prefix rows.

`python -m vinci_jax.bench grpo_update [--steps 4] [--rounds 3] [--prompts 4] [--n 4] [--max_new_tokens 48]`

The CPU demo's shapes by default (configs/virl.py:tiny): a tiny Qwen2.5-VL (real 151,936-token vocabulary) with
random weights, 4 prompts of one 112 x 112 image (16 image tokens) and ~48 text tokens, 4 rollouts each, micro-batches
of 8 rows, responses of 8 to 48 tokens drawn
afresh for each of `--steps` steps (as sampling would). The three layouts (padded: one rollout per row; packed:
first-fit rows with segment ids; shared_prefix: a group's prompt once, then its responses) run the same rollouts
through the real GRPOUpdater. Every step is first run once per layout untimed (the first step twice: a gradient
compiled before the first apply, which commits the parameters, is not reused), so every micro-batch shape is
compiled before timing (`compiles_while_timed` says whether anything compiled later): the figures are steady state,
not compile time. Timed rounds interleave the layouts (round r: each layout updates on every step in turn), so machine
load falls on all of them alike; figures are medians over rounds of per-step seconds, response tokens per second,
in wall time and in this process's CPU time (all threads; the steadier figure on a shared machine). Also per step:
row tokens (the decoder's input, padding included) and image encodes. `--released`: instead, the analytic tokens,
attention pairs, Qwen3-VL-8B decoder FLOPs and image encodes per group at 6,144 + 8 x 10,240 (shared vs unshared).
The JSON object is the last line of output.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

PAD, IMAGE, VSTART, VEND = 151643, 151655, 151652, 151653


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


LAYOUTS = ("padded", "packed", "shared_prefix")


def _updater(layout: str, n: int, micro_batch_rows: int, logit_chunk: int) -> tuple[Any, Any]:
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
    return updater, ts.init_train_state(split.params, optimizer)


def _work(updater: Any, rollouts: Any) -> tuple[int, int]:
    """(row tokens, image encodes) of one step's micro-batches in this layout."""
    advantages, keep = updater.advantages(rollouts.rewards)
    tokens = images = 0
    for micro in updater.micro_batches(rollouts, advantages, keep):
        tokens += int(np.size(micro["input_ids"]))
        vision = micro["vision_inputs"]
        if vision is not None:  # one id per image frame within a vision row, 0 = padding
            images += sum(len(np.setdiff1d(np.unique(row), [0])) for row in np.asarray(vision.full_segment_ids))
    return tokens, images


def _timed_update(updater: Any, state: Any, rollouts: Any) -> tuple[Any, float, float, float]:
    import jax

    began, began_cpu = time.perf_counter(), time.process_time()
    state, metrics = updater.update(state, rollouts)
    jax.block_until_ready(state["params"])
    return state, time.perf_counter() - began, time.process_time() - began_cpu, metrics["response_tokens"]


def run(steps: list[Any], n: int, micro_batch_rows: int, logit_chunk: int, rounds: int) -> dict[str, Any]:
    """Warm every layout on every step, then `rounds` interleaved timed rounds; medians per layout."""
    built = {layout: _updater(layout, n, micro_batch_rows, logit_chunk) for layout in LAYOUTS}
    states, warm = {k: v[1] for k, v in built.items()}, {}
    for layout, (updater, _) in built.items():
        began = time.perf_counter()
        # step 0 first: its apply commits the parameters, and a gradient compiled for uncommitted ones is not reused
        for rollouts in steps[:1] + steps:
            states[layout], *_ = _timed_update(updater, states[layout], rollouts)
        warm[layout] = (time.perf_counter() - began, updater.grad_fn._cache_size())
    samples: dict[str, list[tuple[float, float, float]]] = {layout: [] for layout in LAYOUTS}
    for _ in range(rounds):
        for rollouts in steps:
            for layout, (updater, _) in built.items():
                states[layout], wall, cpu, tokens = _timed_update(updater, states[layout], rollouts)
                samples[layout].append((wall, cpu, tokens))
    result = {}
    for layout, (updater, _) in built.items():
        wall, cpu, tokens = (np.asarray(x) for x in zip(*samples[layout], strict=True))
        work = [_work(updater, rollouts) for rollouts in steps]
        result[layout] = {
            "warmup_s": round(warm[layout][0], 2),
            "update_s": round(float(np.median(wall)), 3),
            "response_tokens_per_s": round(float(np.median(tokens / wall)), 1),
            "update_cpu_s": round(float(np.median(cpu)), 3),
            "response_tokens_per_cpu_s": round(float(np.median(tokens / cpu)), 1),
            "row_tokens_per_step": round(float(np.mean([w[0] for w in work])), 1),
            "image_encodes_per_step": round(float(np.mean([w[1] for w in work])), 1),
            "compiled_shapes": len(updater.shapes),
            "compiles_while_timed": int(updater.grad_fn._cache_size()) - warm[layout][1],
        }
    return result


def released_savings(prompt: int = 6144, response: int = 10240, n: int = 8) -> dict[str, Any]:
    """Analytic per group at full lengths: shared-prefix rows vs unshared (n rows of prompt + response) for
    Qwen3-VL-8B's trained FLOPs (matmul weights, the LM head on response tokens, attention at the causal / branch
    mask's allowed pairs), tokens and image encodes. Abstract parameters: no memory, no weights."""
    import jax.numpy as jnp
    from flax import nnx

    from vinci_jax.aot import flops as flops_lib
    from vinci_jax.models.families import get_family

    family = get_family("qwen3_vl")
    config = family.preset("8b")
    params = nnx.state(family.abstract_model(config, jnp.bfloat16), nnx.Param).to_pure_dict()
    parts, text = flops_lib._matmul_params(params), config.text
    per_pair = 4.0 * text.num_hidden_layers * flops_lib._attention_width(text)
    head = flops_lib._head_params(config, parts)

    def trained(tokens: float, pairs: float) -> float:
        return 3.0 * (2.0 * parts["text"] * tokens + 2.0 * head * n * response + per_pair * pairs)

    full = prompt + response
    unshared = {"tokens": n * full, "pairs": n * full * (full + 1) / 2, "image_encodes": n}
    shared = {"tokens": prompt + n * response, "image_encodes": 1,
              "pairs": prompt * (prompt + 1) / 2 + n * (response * prompt + response * (response + 1) / 2)}  # fmt: skip
    for layout in (unshared, shared):
        layout["decoder_train_flops"] = trained(layout["tokens"], layout["pairs"])
    return {
        "lengths": f"{prompt} + {n} x {response}", "unshared": unshared, "shared_prefix": shared,
        **{f"{key}_ratio": round(shared[key] / unshared[key], 4)
           for key in ("tokens", "pairs", "decoder_train_flops", "image_encodes")},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench grpo_update", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="distinct steps of rollouts (each warmed up first)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over every step, layouts interleaved")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--micro_batch_rows", type=int, default=8)
    parser.add_argument("--logit_chunk", type=int, default=0, help="LM-head chunk (0: whole window, the tiny preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--released", action="store_true", help="only the analytic savings at the released lengths")
    args = parser.parse_args(argv)
    if args.released:
        return {"bench": "grpo_update", "released": released_savings()}

    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig

    rng = np.random.default_rng(args.seed)
    config = Qwen25VLConfig.tiny()
    steps = [_rollouts(rng, config, args.prompts, args.n, args.max_new_tokens) for _ in range(args.steps)]
    result: dict[str, Any] = {"bench": "grpo_update", "rollouts_per_step": args.prompts * args.n,
                              "rounds": args.rounds, "load_before": os.getloadavg()[0]}  # fmt: skip
    result |= run(steps, args.n, args.micro_batch_rows, args.logit_chunk, args.rounds)
    result["load_after"] = os.getloadavg()[0]
    for layout in ("packed", "shared_prefix"):
        for unit in ("s", "cpu_s"):
            key = f"response_tokens_per_{unit}"
            result[f"{layout}_speedup_per_token_{unit}"] = round(result[layout][key] / result["padded"][key], 3)
    return result
