"""Qwen3-VL configs: HF layouts in and out, preset parameter counts (ours, transformers', the published totals)."""

from __future__ import annotations

import jax
import pytest
import torch
from flax import nnx

from vinci_jax.models.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration, parameter_count

# Totals published on the Qwen/Qwen3-VL-*-Instruct model cards, in billions (3 significant digits).
PUBLISHED_B = {"2b": 2.13, "4b": 4.44, "8b": 8.77, "32b": 33.4}

# config.json of the released Qwen3-VL-8B-Instruct as written by transformers 4.57 (relevant fields).
RELEASED_8B = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "image_token_id": 151655,
    "model_type": "qwen3_vl",
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643, "dtype": "bfloat16",
        "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text", "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000, "use_cache": True, "vocab_size": 151936,
    },
    "tie_word_embeddings": False,
    "video_token_id": 151656,
    "vision_config": {
        "deepstack_visual_indexes": [8, 16, 24], "depth": 27, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152,
        "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 4304, "model_type": "qwen3_vl",
        "num_heads": 16, "num_position_embeddings": 2304, "out_hidden_size": 4096, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    },
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
}  # fmt: skip


def test_released_layout_reads_as_the_8b_preset():
    assert Qwen3VLConfig.from_hf(RELEASED_8B) == Qwen3VLConfig.preset("8b")


@pytest.mark.parametrize("tie", [False, True])
def test_to_hf_round_trips_through_transformers(tie):
    from transformers import Qwen3VLConfig as HFConfig

    ours = Qwen3VLConfig.tiny(tie_word_embeddings=tie)
    hf = HFConfig(**ours.to_hf("float32"))
    assert hf.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert hf.vision_config.deepstack_visual_indexes == [0, 1]
    assert Qwen3VLConfig.from_hf(hf.to_dict()) == ours


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_preset_parameter_counts_match_published_totals(name):
    total = parameter_count(Qwen3VLConfig.preset(name))["total"]
    assert float(f"{total / 1e9:.3g}") == PUBLISHED_B[name]


def _ours_and_transformers(name: str) -> tuple[int, int]:
    from transformers import Qwen3VLConfig as HFConfig
    from transformers import Qwen3VLForConditionalGeneration as HFModel

    config = Qwen3VLConfig.preset(name)
    abstract = nnx.eval_shape(lambda: Qwen3VLForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    ours = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    with torch.device("meta"):  # shapes only
        hf = sum(p.numel() for p in HFModel(HFConfig(**config.to_hf())).parameters())
    return ours, hf


def test_2b_model_has_exactly_the_counted_parameters():
    ours, hf = _ours_and_transformers("2b")
    assert ours == hf == parameter_count(Qwen3VLConfig.preset("2b"))["total"] == 2_127_532_032


@pytest.mark.slow
@pytest.mark.parametrize("name", ["4b", "8b", "32b"])
def test_large_models_have_exactly_the_counted_parameters(name):
    ours, hf = _ours_and_transformers(name)
    assert ours == hf == parameter_count(Qwen3VLConfig.preset(name))["total"]


def test_bad_configs_raise_clear_errors():
    with pytest.raises(NotImplementedError, match="mrope_interleaved"):
        Qwen3VLConfig.from_hf({**RELEASED_8B, "text_config": {
            **RELEASED_8B["text_config"], "rope_scaling": {"mrope_interleaved": False, "mrope_section": [24, 20, 20]}
        }})  # fmt: skip
    with pytest.raises(ValueError, match="deepstack_visual_indexes"):
        Qwen3VLConfig.from_hf({**RELEASED_8B, "vision_config": {**RELEASED_8B["vision_config"], "depth": 8}})
    with pytest.raises(ValueError, match="model_type"):
        Qwen3VLConfig.from_hf({**RELEASED_8B, "model_type": "qwen2_5_vl"})
    with pytest.raises(ValueError, match="unknown Qwen3-VL preset"):
        Qwen3VLConfig.preset("7b")
