"""Qwen2.5-VL config: config.json round trips in both layouts, presets' parameter counts."""

from __future__ import annotations

import json
import math

import jax
import pytest
from flax import nnx

from vinci_jax.hf.testing import save_tiny_checkpoint
from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration

# Published totals, derived from the official Qwen/Qwen2.5-VL-{3B,7B,32B,72B}-Instruct config.json shapes:
#   vision (same tower in all sizes except the MLP width I = 3420 for 3B/7B, 3456 for 32B/72B; D = 1280, 32 blocks):
#     patch_embed D*3*2*14*14 + 32 * [2D (norms) + D*3D+3D (qkv) + D*D+D (proj) + 2(D*I+I) + I*D+D (mlp)]
#     + merger: D (ln_q) + (4D)^2+4D + 4D*H+H            (H = text hidden size)
#   text: V*H (embed) [+ V*H lm_head when untied] + H (final norm)
#     + layers * [2H (norms) + H*H+H (q) + 2(H*kv*hd+kv*hd) (k,v) + H*H (o) + 3*H*F (mlp)]
#   3B : V=151936 H=2048 F=11008 36 layers 16 heads 2 kv, tied     -> 3,754,622,976
#   7B : V=152064 H=3584 F=18944 28 layers 28 heads 4 kv, untied   -> 8,292,166,656
#   32B: V=152064 H=5120 F=27648 64 layers 40 heads 8 kv, untied   -> 33,452,718,336
#   72B: V=152064 H=8192 F=29568 80 layers 64 heads 8 kv, untied   -> 73,410,777,344
# The first three equal the totals given in the project brief; for 72B the brief says 73,410,777,088 (256 fewer),
# which no set of whole tensors of this architecture can account for (the smallest tensor has 1024 elements), so
# the count above, from the official shapes, is the one tested.
PUBLISHED = {
    "3b": 3_754_622_976,
    "7b": 8_292_166_656,
    "32b": 33_452_718_336,
    "72b": 73_410_777_344,
}


def count_params(config: Qwen25VLConfig) -> int:
    model = nnx.eval_shape(lambda: Qwen25VLForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(leaf.shape) for leaf in leaves)


# eval_shape of the 32B/72B models takes ~30-60 s on a 2-core machine: those two are slow-marked.
@pytest.mark.parametrize(
    "name", ["3b", "7b", pytest.param("32b", marks=pytest.mark.slow), pytest.param("72b", marks=pytest.mark.slow)]
)
def test_preset_parameter_counts_match_published_checkpoints(name):
    assert count_params(Qwen25VLConfig.preset(name)) == PUBLISHED[name]


def test_to_hf_is_what_transformers_writes(tmp_path):
    path = save_tiny_checkpoint(tmp_path, tie_word_embeddings=True, num_key_value_heads=1, window_size=84)
    written = json.loads((path / "config.json").read_text())
    config = Qwen25VLConfig.from_hf(written)
    assert config.tie_word_embeddings and config.text.num_key_value_heads == 1 and config.vision.window_size == 84
    assert config.text.mrope_section == (2, 3, 3)
    ours = config.to_hf(dtype=written["dtype"])
    written.pop("transformers_version")
    assert ours == written


def test_from_hf_reads_the_original_release_layout():
    """The released config.json files keep text fields at the top level with rope_scaling {type: mrope}."""
    legacy = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "vision_config": {
            "depth": 32,
            "hidden_act": "silu",
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "in_chans": 3,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
    }
    assert Qwen25VLConfig.from_hf(legacy) == Qwen25VLConfig.preset("7b")
    assert Qwen25VLConfig.from_hf(Qwen25VLConfig.preset("7b").to_hf()) == Qwen25VLConfig.preset("7b")


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="mrope_section"):
        Qwen25VLConfig.tiny().text.__class__(hidden_size=64, num_attention_heads=4, mrope_section=(4, 4, 4))
    with pytest.raises(ValueError, match="out_hidden_size"):
        Qwen25VLConfig.tiny().replace(vision=Qwen25VLConfig.preset("7b").vision)
    with pytest.raises(ValueError, match="unknown Qwen2.5-VL preset"):
        Qwen25VLConfig.preset("14b")
