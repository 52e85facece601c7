"""Tiny random Qwen2.5-VL checkpoints written by transformers itself, for tests and the CPU demo.

Needs torch + transformers (dev dependencies). Nothing is downloaded: the weights come from transformers' own
initialisation under a fixed torch seed, then `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vinci_jax.models.qwen_vl.testing import TINY_SPECIALS, TINY_VOCAB, save_random_checkpoint, tiny_config_kwargs

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

    text = dict(
        num_hidden_layers=2,
        num_key_value_heads=num_key_value_heads,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]),
    )
    vision = dict(depth=vision_depth, window_size=window_size, fullatt_block_indexes=list(fullatt_block_indexes),
                  tokens_per_second=2)  # fmt: skip
    return Qwen2_5_VLConfig(
        **tiny_config_kwargs(real_vocab=real_vocab, tie_word_embeddings=tie_word_embeddings, text=text, vision=vision)
    )


def save_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, **config_kwargs: Any) -> Path:
    """Build a random transformers Qwen2_5_VLForConditionalGeneration (float32) and save_pretrained it to out_dir."""
    return save_random_checkpoint("Qwen2_5_VLForConditionalGeneration", tiny_hf_config(**config_kwargs), out_dir, seed)
