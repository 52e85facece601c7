"""A tiny random Qwen2.5-VL that vLLM's CPU build can run, as an HF dir for `--config.model.hf_dir` / `init_from`.

The `tiny` preset has head_dim 16 (text and vision), which vLLM's CPU attention does not take; this is the same
model with head_dim 32, the real Qwen vocabulary and special-token ids, and our processor files. The vLLM tests and
the README's CPU ViRL-with-vLLM command use it:

    .venv-vllm/bin/python -m vinci_jax.sampling.vllm_tiny /tmp/vinci_jax/tiny_vllm_hf
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

QWEN_IDS = {"image": 151655, "video": 151656, "vision_start": 151652, "vision_end": 151653, "eos": 151645,
            "pad": 151643}  # fmt: skip


def build_tiny_vllm_qwen25(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the model (random, float32, seed `seed`) and our processor files to `path`; returns it."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vinci_jax.processing import QwenProcessor

    ids = QWEN_IDS
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids["pad"], eos_token_id=ids["eos"], initializer_range=0.2,
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
            initializer_range=0.2,
        ),
        image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"], initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).eval().save_pretrained(path)
    QwenProcessor().save_pretrained(path)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.sampling.vllm_tiny", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="directory to write the HF model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_vllm_qwen25(args.out, args.seed))


if __name__ == "__main__":
    main()
