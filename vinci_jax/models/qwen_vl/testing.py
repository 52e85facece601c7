"""What the tiny random checkpoints of both Qwen-VL families share (`vinci_jax.hf.testing` for Qwen2.5-VL,
`vinci_jax.models.qwen3_vl.testing`): the tiny vocabulary's ids and writing a transformers model built from a config.

Needs torch + transformers (dev dependencies). Nothing is downloaded: the weights come from transformers' own
initialisation under a fixed torch seed, then `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TINY_VOCAB = 320
TINY_SPECIALS = dict(image_token_id=310, video_token_id=311, vision_start_token_id=312, vision_end_token_id=313)
TINY_BOS, TINY_EOS = 300, 301


def tiny_vocab(real_vocab: bool) -> tuple[dict[str, int], dict[str, int]]:
    """(vocab_size / bos / eos of the text config, special-token ids of the top level): the real Qwen ones (for
    runs through the real processor; the ids are then the config defaults) or the tiny vocabulary's."""
    if real_vocab:
        return dict(vocab_size=151936, bos_token_id=151643, eos_token_id=151645), {}
    return dict(vocab_size=TINY_VOCAB, bos_token_id=TINY_BOS, eos_token_id=TINY_EOS), TINY_SPECIALS


# the dimensions both families' tiny checkpoints share: a 64-wide text model and a 32-wide vision tower
TINY_TEXT = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, max_position_embeddings=2048,
                 rms_norm_eps=1e-6)  # fmt: skip
TINY_VISION = dict(hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64)


def tiny_config_kwargs(
    *, real_vocab: bool, tie_word_embeddings: bool, text: dict[str, Any], vision: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of a transformers Qwen-VL config: the shared tiny dimensions plus a family's `text` and
    `vision` entries, the tiny or real vocabulary (`tiny_vocab`), the head tying."""
    vocab, specials = tiny_vocab(real_vocab)
    return dict(
        text_config={**TINY_TEXT, **text, **vocab},
        vision_config={**TINY_VISION, **vision},
        tie_word_embeddings=tie_word_embeddings,
        **specials,
    )


def save_random_checkpoint(architecture: str, config: Any, out_dir: str | os.PathLike, seed: int) -> Path:
    """Build transformers' `architecture` (float32) from `config` under torch seed `seed` and save_pretrained it."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    # transformers initialises norms to ones and biases to zeros; randomise them so the mapping is really tested
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(out_dir)
    return Path(out_dir)
