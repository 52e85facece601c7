"""Tiny random Qwen2.5-VL checkpoints written by transformers itself, for tests and the CPU demo.

Needs torch + transformers (dev dependencies). Nothing is downloaded: the weights come from transformers' own
initialisation under a fixed torch seed, then `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TINY_VOCAB = 320
TINY_SPECIALS = dict(image_token_id=310, video_token_id=311, vision_start_token_id=312, vision_end_token_id=313)


def tiny_hf_config(
    *,
    tie_word_embeddings: bool = False,
    num_key_value_heads: int = 2,
    vision_depth: int = 2,
    fullatt_block_indexes: tuple[int, ...] = (1,),
    window_size: int = 56,
    real_vocab: bool = False,
) -> Any:
    """A transformers Qwen2_5_VLConfig with a 64-wide text model and a 32-wide vision tower.

    `real_vocab=True` keeps the Qwen vocabulary size and special-token ids (for runs through the real processor).
    """
    from transformers import Qwen2_5_VLConfig

    vocab = dict(vocab_size=151936, bos_token_id=151643, eos_token_id=151645) if real_vocab else dict(
        vocab_size=TINY_VOCAB, bos_token_id=300, eos_token_id=301
    )  # fmt: skip
    specials = {} if real_vocab else TINY_SPECIALS
    return Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]),
            **vocab,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            out_hidden_size=64,
            window_size=window_size,
            fullatt_block_indexes=list(fullatt_block_indexes),
            tokens_per_second=2,
        ),
        tie_word_embeddings=tie_word_embeddings,
        **specials,
    )


def save_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, **config_kwargs: Any) -> Path:
    """Build a random transformers Qwen2_5_VLForConditionalGeneration (float32) and save_pretrained it to out_dir."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_hf_config(**config_kwargs)).eval()
    # transformers initialises norms to ones and biases to zeros; randomise them so the mapping is really tested
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(out_dir)
    return Path(out_dir)
