"""Sampler benchmark: our jitted KV-cache sampler against transformers' `generate` on the same small model.

Both sample the same prompts (text + one image each), batch and number of new tokens (stop tokens disabled so every
row generates exactly `--new_tokens`), on the CPU, in one run. Also measures what shared prefill saves at n=8:
`--prompts` prompts x n continuations from one prefill per prompt, against n copies of every prompt prefilled
separately. Prints a JSON object as its last line with a top-level `speedup` (ours / transformers, tokens/s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import numpy as np

SMALL = dict(vocab=32000, hidden=256, layers=4, heads=8, kv_heads=2, intermediate=768, vision_hidden=128, depth=4)


def _build_hf_model(path: str, seed: int = 0):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    s = SMALL
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
            max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                           "mrope_section": [4, 6, 6]},
            bos_token_id=0, eos_token_id=1,
        ),
        vision_config=dict(
            depth=s["depth"], hidden_size=s["vision_hidden"], intermediate_size=2 * s["vision_hidden"], num_heads=4,
            out_hidden_size=s["hidden"], window_size=112, fullatt_block_indexes=[s["depth"] - 1],
        ),
        image_token_id=s["vocab"] - 10, video_token_id=s["vocab"] - 9, vision_start_token_id=s["vocab"] - 8,
        vision_end_token_id=s["vocab"] - 7,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    return model


def _prompts(rng: np.random.Generator, count: int, text_len: int, grid: tuple[int, int, int]) -> list[dict]:
    s = SMALL
    t, h, w = grid
    out = []
    for _ in range(count):
        ids = [s["vocab"] - 8] + [s["vocab"] - 10] * (t * h * w // 4) + [s["vocab"] - 7]
        ids += list(rng.integers(2, s["vocab"] - 100, text_len))
        out.append(
            {
                "input_ids": np.asarray(ids, np.int32),
                "pixel_values": rng.normal(size=(t * h * w, 3 * 2 * 14 * 14)).astype(np.float32),
                "image_grid_thw": np.asarray([grid], np.int64),
            }
        )
    return out


def _time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench sampler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="rows generated together")
    # ViRL rollouts run to hundreds or thousands of tokens; 256 measures the steady decode rate, not start-up cost
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--text_len", type=int, default=48, help="text tokens per prompt (plus the image tokens)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts for the shared-prefill comparison (x n=8)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
    from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    grid = (1, 8, 8)
    with tempfile.TemporaryDirectory() as tmp:
        torch_model = _build_hf_model(tmp)
        model = load_qwen2_5_vl(tmp)
    prompts = _prompts(rng, args.batch, args.text_len, grid)
    never = -1  # no stop token: every row generates exactly new_tokens
    sampler = Sampler(model, (never,), 0)
    batch = make_prompt_batch(prompts, model.config, 0)
    greedy = SamplingParams(greedy=True, max_new_tokens=args.new_tokens)

    def ours() -> None:
        jax.block_until_ready(sampler.generate(batch, greedy).tokens)

    def theirs() -> None:
        with torch.no_grad():
            torch_model.generate(
                input_ids=torch.as_tensor(batch.input_ids, dtype=torch.long),
                attention_mask=torch.as_tensor(batch.attention_mask, dtype=torch.long),
                pixel_values=torch.as_tensor(np.concatenate([p["pixel_values"] for p in prompts])),
                image_grid_thw=torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in prompts])),
                mm_token_type_ids=torch.as_tensor(batch.input_ids == SMALL["vocab"] - 10, dtype=torch.int32),
                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                eos_token_id=None, pad_token_id=0,
            )  # fmt: skip

    tokens = args.batch * args.new_tokens
    ours_s, theirs_s = _time(ours, args.repeats), _time(theirs, args.repeats)

    group_prompts = _prompts(rng, args.prompts, args.text_len, grid)
    grouped_batch = make_prompt_batch(group_prompts, model.config, 0)
    copies_batch = make_prompt_batch([p for p in group_prompts for _ in range(8)], model.config, 0)
    sample8 = SamplingParams(n=8, temperature=1.0, max_new_tokens=args.new_tokens)
    sample1 = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.new_tokens)
    keys = jax.random.split(jax.random.key(0), args.prompts * 8)
    shared_s = _time(lambda: sampler.generate_with_row_keys(grouped_batch, sample8, keys), args.repeats)
    separate_s = _time(lambda: sampler.generate_with_row_keys(copies_batch, sample1, keys), args.repeats)

    result = {
        "benchmark": "sampler",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "model": SMALL,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "prompt_tokens": int(batch.prompt_lengths.max()),
        "ours_tokens_per_s": tokens / ours_s,
        "transformers_tokens_per_s": tokens / theirs_s,
        "speedup": theirs_s / ours_s,
        "shared_prefill": {
            "prompts": args.prompts,
            "n": 8,
            "shared_s": shared_s,
            "separate_prefills_s": separate_s,
            "gain": separate_s / shared_s,
        },
    }
    print(f"ours {result['ours_tokens_per_s']:.1f} tok/s, transformers {result['transformers_tokens_per_s']:.1f} tok/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
