"""Tiny random Qwen2.5-VL checkpoints written by transformers itself, for tests and the CPU demo.

Needs torch + transformers (dev dependencies). Nothing is downloaded: the weights come from transformers' own
initialisation under a fixed torch seed, then `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vinci_jax.models.qwen_vl.testing import TINY_SPECIALS, TINY_VOCAB, save_random_checkpoint, tiny_vocab

__all__ = ["TINY_SPECIALS", "TINY_VOCAB", "save_tiny_checkpoint", "tiny_hf_config"]


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

    vocab, specials = tiny_vocab(real_vocab)
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
    return save_random_checkpoint("Qwen2_5_VLForConditionalGeneration", tiny_hf_config(**config_kwargs), out_dir, seed)
