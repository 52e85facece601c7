"""Qwen2.5-VL <-> Hugging Face: the name table, loading a checkpoint dir onto a mesh, and exporting an HF dir.

Checkpoint names are those of the released checkpoints and of transformers 5.x `save_pretrained`
(`model.layers.*`, `model.embed_tokens`, `visual.*`, `lm_head`). Directories written by transformers 4.5x use
`model.language_model.*` / `model.visual.*`; those load too (alias rules), and export always writes the former.
Reading, loading and writing are the shared Qwen-VL ones (`vinci_jax.hf.qwen_vl`).
"""

from __future__ import annotations

from vinci_jax.hf.loader import Rule
from vinci_jax.hf.qwen_vl import (
    FLAT,
    NESTED,
    PATCH_EMBED,
    SIDE_FILES,
    QwenVLCheckpoints,
    checkpoint_rules,
    default_generation_config,
    linear_rules,
    norm_rules,
    text_rules,
    write_hf_dir,
)
from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from vinci_jax.models.qwen2_5_vl.modeling import Qwen25VLForConditionalGeneration

__all__ = [
    "PATCH_EMBED",
    "SIDE_FILES",
    "abstract_model",
    "default_generation_config",
    "export_qwen2_5_vl",
    "load_qwen2_5_vl",
    "qwen2_5_vl_rules",
    "read_config",
    "write_hf_dir",
]


def _text_rules(prefix: str) -> list[Rule]:
    return text_rules(prefix, qkv_bias=True, o_bias=False, qk_norm=False)


def _vision_rules(prefix: str) -> list[Rule]:
    block, ours = f"{prefix}blocks.{{i}}.", "visual.blocks.{i}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", "visual.patch_embed.proj.kernel", PATCH_EMBED),
        *norm_rules(f"{prefix}merger.ln_q", "visual.merger.ln_q"),
        *norm_rules(block + "norm1", ours + "norm1"),
        *norm_rules(block + "norm2", ours + "norm2"),
    ]
    for hf, nnx_name in (("merger.mlp.0", "merger.mlp_0"), ("merger.mlp.2", "merger.mlp_2")):
        rules += linear_rules(prefix + hf, "visual." + nnx_name)
    for proj in ("attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        rules += linear_rules(block + proj, ours + proj)
    return rules


def qwen2_5_vl_rules(config: Qwen25VLConfig) -> list[Rule]:
    """The HF <-> NNX table; the first rule for a parameter is the name export writes (the flat layout)."""
    return checkpoint_rules(config, _text_rules, _vision_rules, (FLAT, NESTED))


_CHECKPOINTS = QwenVLCheckpoints(Qwen25VLConfig, Qwen25VLForConditionalGeneration, qwen2_5_vl_rules)
read_config = _CHECKPOINTS.read_config
abstract_model = _CHECKPOINTS.abstract_model
load_qwen2_5_vl = _CHECKPOINTS.load
export_qwen2_5_vl = _CHECKPOINTS.export
