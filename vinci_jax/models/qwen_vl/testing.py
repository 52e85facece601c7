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
