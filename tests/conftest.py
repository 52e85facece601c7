"""Test setup: 8 fake CPU devices for sharding tests, float32-exact matmuls for parity tests.

XLA_FLAGS must be set before JAX initialises its backend, which is why this runs at import time of the conftest.
"""

from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


# ---- shared fixtures -------------------------------------------------------------------------------------------------

import pytest  # noqa: E402

# Token ids of the tiny random Qwen2.5-VL checkpoints (small vocab; special ids at the top, like the real layout).
TINY_VOCAB = 1024
TINY_IDS = {"image": 1000, "video": 1001, "vision_start": 1002, "vision_end": 1003, "eos": 1010, "pad": 1011}


QWEN_VOCAB = 151936
QWEN_IDS = {"image": 151655, "video": 151656, "vision_start": 151652, "vision_end": 151653, "eos": 151645,
            "pad": 151643}  # fmt: skip


def build_tiny_qwen25_vl(path, *, seed: int = 0, tie: bool = False, init_range: float = 0.2, real_vocab: bool = False):
    """Save a tiny random transformers Qwen2_5_VLForConditionalGeneration (float32) to `path`; returns the model.

    The larger-than-default init range makes logits peaked, so greedy decoding has no near-ties that float noise
    could flip between PyTorch and JAX.
    """
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab, ids = (QWEN_VOCAB, QWEN_IDS) if real_vocab else (TINY_VOCAB, TINY_IDS)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            tie_word_embeddings=tie, bos_token_id=ids["pad"], eos_token_id=ids["eos"],
            initializer_range=init_range,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
            initializer_range=init_range,
        ),
        image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=tie, initializer_range=init_range,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    if real_vocab:  # a chat checkpoint: the offline Qwen tokenizer and processor files beside the weights
        from vinci_jax.processing import QwenProcessor

        QwenProcessor().save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def tiny_qwen25_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL HF directory shared by the tests that only need *a* checkpoint."""
    path = tmp_path_factory.mktemp("tiny_qwen25")
    build_tiny_qwen25_vl(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen25_factory():
    """`build_tiny_qwen25_vl` for tests that need their own variant (tied head, another seed)."""
    return build_tiny_qwen25_vl


@pytest.fixture(scope="session")
def tiny_qwen25_chat_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL with the real Qwen vocabulary, tokenizer and processor files: a chat checkpoint."""
    path = tmp_path_factory.mktemp("tiny_qwen25_chat")
    build_tiny_qwen25_vl(path, real_vocab=True)
    return path


@pytest.fixture(scope="session")
def tiny_svg_rl_corpus(tmp_path_factory):
    """16 easy synthetic SVG prompts (a quarter held out as `test`): the corpus of the ViRL command-line tests."""
    from vinci_data.synth.build import SynthConfig, ensure_synth

    out = tmp_path_factory.mktemp("virl_corpus")
    config = SynthConfig(size=16, seed=3, domains=("svg",), difficulty_weights=(1.0, 0.0, 0.0), refine_fraction=0.0,
                         val_fraction=0.0, test_fraction=0.25)  # fmt: skip
    ensure_synth(str(out), config, num_workers=1)
    return out
