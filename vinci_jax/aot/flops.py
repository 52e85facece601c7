"""Analytic model FLOPs of the programs: 2 N per token forward (6 N trained) plus dense attention, per call.

N counts the matmul weights (rank >= 2 leaves) of the part that runs: the text decoder (without the embedding
table, a lookup), the LM head only where logits are computed, the vision tower for patches. Attention adds
4 * heads * head_dim * context per token and layer forward (QK^T and PV), three times that trained; the decoder is
causal, so a token of a length-L sequence attends to (L + 1) / 2 keys on average (what splash's block-sparse kernel
computes, up to its block edges), while vision attention counts the whole row (an upper bound: segments are
per image). These are the FLOPs a perfect implementation must do; the compiled count over them shows recomputation
(remat), padding and waste, and under them what `cost_analysis()` cannot see (Pallas kernels, loop trips: see
`report`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from vinci_jax.train.optimizer import path_str


def _matmul_params(params: Any) -> dict[str, int]:
    """Matmul weights by part: vision, embedding, lm_head, text."""
    parts = {"vision": 0, "embedding": 0, "lm_head": 0, "text": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if len(leaf.shape) < 2:
            continue
        name, size = path_str(path), int(np.prod(leaf.shape))
        part = (
            "vision" if name.startswith("visual/")
            else "embedding" if "embed_tokens" in name
            else "lm_head" if "lm_head" in name
            else "text"
        )  # fmt: skip
        parts[part] += size
    return parts


def _head_params(model_config: Any, parts: dict[str, int]) -> int:
    """The LM head's matmul: its own kernel, or the tied embedding table."""
    return parts["lm_head"] or int(model_config.text.vocab_size) * int(model_config.text.hidden_size)


def _attention_width(text: Any) -> int:
    return int(text.num_attention_heads) * int(text.head_dim)


def text_forward_flops(
    model_config: Any, params: Any, rows: int, length: int, logit_tokens: int, factor: float = 1.0
) -> float:
    """Forward (factor 1) or trained (factor 3) FLOPs of `rows` sequences of `length`, logits on `logit_tokens`."""
    parts, text = _matmul_params(params), model_config.text
    tokens = rows * length
    dense = 2.0 * parts["text"] * tokens + 2.0 * _head_params(model_config, parts) * rows * logit_tokens
    attention = 4.0 * text.num_hidden_layers * _attention_width(text) * (length + 1) / 2.0 * tokens
    return factor * (dense + attention)


def text_train_flops(model_config: Any, params: Any, rows: int, length: int, logit_tokens: int) -> float:
    return text_forward_flops(model_config, params, rows, length, logit_tokens, 3.0)


def vision_flops(vision_config: Any, params: Any, patches: int, row_length: int, per_param: float) -> float:
    """`per_param` = 2 forward, 6 trained. Attention at the row length on every layer (the dense upper bound)."""
    weights = _matmul_params(params)["vision"]
    attention = 4.0 * int(vision_config.depth) * int(vision_config.hidden_size) * row_length * patches
    return per_param / 2.0 * (2.0 * weights * patches + attention)


def decode_flops(model_config: Any, params: Any, rows: int, prompt: int, new_tokens: int) -> float:
    """One token per row per step over `new_tokens` steps; attention over the cache as it fills (mean context)."""
    parts, text = _matmul_params(params), model_config.text
    per_token = 2.0 * (parts["text"] + _head_params(model_config, parts))
    context = prompt + new_tokens / 2.0
    per_token += 4.0 * text.num_hidden_layers * _attention_width(text) * context
    return per_token * rows * new_tokens
