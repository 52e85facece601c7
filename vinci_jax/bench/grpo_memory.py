"""GRPO loss memory: XLA's compiled temporary memory of one micro-batch gradient, whole-window LM head vs chunked.

Compiles (does not run) `make_grad_fn` for a tiny Qwen2.5-VL with the real 151,936-token vocabulary on a text-only
micro-batch of `--rows` rollouts x `--window` response tokens, once per `--chunks` value (0 = whole window), and
reports `temp_bytes` from `compiled.memory_analysis()`. The whole-window logits alone are rows x window x vocab x 4
bytes (float32 log-softmax); chunking bounds them by one chunk. What remains grows with the sequence through the
decoder's own activations (the CPU attention materialises L x L scores), not through the vocabulary. The JSON object
is the last line of output.
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

VOCAB = 151_936


def temp_bytes(rows: int, prompt: int, window: int, chunk: int) -> int:
    """Compiled temporary memory of one GRPO gradient micro-batch (no execution)."""
    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
    from vinci_jax.rl.grpo_step import GRPOLossConfig, make_grad_fn
    from vinci_jax.train.train_state import split_model

    model = nnx.eval_shape(lambda: Qwen25VLForConditionalGeneration(Qwen25VLConfig.tiny(), rngs=nnx.Rngs(0)))
    split = split_model(model)
    trainable = jax.tree.map(lambda _: True, split.params)
    grad_fn = make_grad_fn(split, GRPOLossConfig(logit_chunk=chunk), trainable)
    width = prompt + window
    micro: dict[str, Any] = {
        "input_ids": jax.ShapeDtypeStruct((rows, width), jnp.int32),
        "attention_mask": jax.ShapeDtypeStruct((rows, width), jnp.int32),
        "position_ids": jax.ShapeDtypeStruct((3, rows, width), jnp.int32),
        "response_start": jax.ShapeDtypeStruct((), jnp.int32),
        "targets": jax.ShapeDtypeStruct((rows, window), jnp.int32),
        "response_mask": jax.ShapeDtypeStruct((rows, window), jnp.float32),
        "old_logprobs": jax.ShapeDtypeStruct((rows, window), jnp.float32),
        "advantages": jax.ShapeDtypeStruct((rows,), jnp.float32),
    }
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), split.params)
    compiled = jax.jit(grad_fn).lower(params, micro, jax.ShapeDtypeStruct((), jnp.float32)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench grpo_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="rollouts in the micro-batch")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    parser.add_argument("--window", type=int, default=2048, help="response window tokens")
    parser.add_argument("--chunks", default="0,1024,256", help="comma-separated logit_chunk values (0 = whole)")
    args = parser.parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",")]
    measured = {c: temp_bytes(args.rows, args.prompt, args.window, c) for c in chunks}
    logits = args.rows * args.window * VOCAB * 4
    for chunk, size in measured.items():
        label = chunk or "whole"
        print(f"logit_chunk={label}: {size / 2**20:,.0f} MiB temporary (window logits {logits / 2**20:,.0f} MiB)")
    whole = measured.get(0)
    return {
        "rows": args.rows,
        "window": args.window,
        "vocab": VOCAB,
        "window_logits_mib": round(logits / 2**20, 1),
        "temp_mib": {str(c): round(v / 2**20, 1) for c, v in measured.items()},
        "reduction": {str(c): round(whole / v, 2) for c, v in measured.items() if c and whole} if whole else {},
        "backend": jax.default_backend(),
    }
