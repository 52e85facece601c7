"""Tiny random Qwen3-VL checkpoints written by transformers itself, for tests and the CPU demo.

Needs torch + transformers (dev dependencies). Nothing is downloaded: weights come from transformers' own
initialisation under a fixed torch seed (norms and biases perturbed so the name mapping is really exercised), then
`save_pretrained`.

    python -m vinci_jax.models.qwen3_vl.testing OUT_DIR [--tie] [--seed N]

writes a tiny checkpoint with the real Qwen vocabulary plus the Qwen3-VL processor files (offline tokenizer, chat
template, preprocessor config), i.e. a directory that `python -m vinci_jax.hf check|export`, SFT and ViRL accept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vinci_jax.models.qwen_vl.testing import (
    TINY_BOS,
    TINY_EOS,
    TINY_SPECIALS,
    save_random_checkpoint,
    tiny_config_kwargs,
)

__all__ = ["TINY_BOS", "TINY_EOS", "TINY_SPECIALS", "save_tiny_checkpoint", "save_tiny_checkpoint_with_processor"]


def tiny_hf_config(
    *,
    tie_word_embeddings: bool = False,
    deepstack_visual_indexes: tuple[int, ...] = (0, 2),
    vision_depth: int = 3,
    num_key_value_heads: int = 2,
    num_position_embeddings: int = 16,
    mrope_section: tuple[int, int, int] = (2, 3, 3),
    real_vocab: bool = False,
    initializer_range: float = 0.02,
) -> Any:
    """A transformers Qwen3VLConfig: 64-wide text model (head_dim 16, 3 layers), 32-wide vision tower.

    `real_vocab=True` keeps the Qwen vocabulary size and special-token ids (for runs through the real processor).
    """
    from transformers import Qwen3VLConfig

    text = dict(
        num_hidden_layers=3,
        num_key_value_heads=num_key_value_heads,
        head_dim=16,
        initializer_range=initializer_range,
        rope_parameters=dict(
            rope_type="default", rope_theta=10000.0, mrope_section=list(mrope_section), mrope_interleaved=True
        ),
    )
    vision = dict(
        depth=vision_depth,
        num_position_embeddings=num_position_embeddings,
        deepstack_visual_indexes=list(deepstack_visual_indexes),
        initializer_range=initializer_range,
    )
    return Qwen3VLConfig(
        **tiny_config_kwargs(real_vocab=real_vocab, tie_word_embeddings=tie_word_embeddings, text=text, vision=vision)
    )


def save_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, **config_kwargs: Any) -> Path:
    """Build a random transformers Qwen3VLForConditionalGeneration (float32) and save_pretrained it to out_dir."""
    return save_random_checkpoint("Qwen3VLForConditionalGeneration", tiny_hf_config(**config_kwargs), out_dir, seed)


def save_tiny_checkpoint_with_processor(out_dir: str | os.PathLike, *, seed: int = 0, tie: bool = False) -> Path:
    """A real-vocabulary tiny checkpoint plus the Qwen3-VL processor files (offline tokenizer)."""
    from vinci_jax.processing.qwen3_vl import Qwen3VLProcessor

    path = save_tiny_checkpoint(out_dir, seed=seed, real_vocab=True, tie_word_embeddings=tie)
    Qwen3VLProcessor().save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m vinci_jax.models.qwen3_vl.testing", description=__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--tie", action="store_true", help="tie the LM head to the token embedding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = save_tiny_checkpoint_with_processor(args.out_dir, seed=args.seed, tie=args.tie)
    print(json.dumps({"written": str(path), "model_type": "qwen3_vl"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
