"""Qwen2.5-VL <-> Hugging Face: the name table, loading a checkpoint dir onto a mesh, and exporting an HF dir.

Checkpoint names are those of the released checkpoints and of transformers 5.x `save_pretrained`
(`model.layers.*`, `model.embed_tokens`, `visual.*`, `lm_head`). Directories written by transformers 4.5x use
`model.language_model.*` / `model.visual.*`; those load too (alias rules), and export always writes the former.
Reading, loading and writing are the shared Qwen-VL ones (`vinci_jax.hf.qwen_vl`).
"""

from __future__ import annotations

from vinci_jax.hf import qwen_vl
from vinci_jax.hf.loader import Rule
from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from vinci_jax.models.qwen2_5_vl.modeling import Qwen25VLForConditionalGeneration


def _text_rules(prefix: str) -> list[Rule]:
    return qwen_vl.text_rules(prefix, qkv_bias=True, o_bias=False, qk_norm=False)


def _vision_rules(prefix: str) -> list[Rule]:
    block, ours = f"{prefix}blocks.{{i}}.", "visual.blocks.{i}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", "visual.patch_embed.proj.kernel", qwen_vl.PATCH_EMBED),
        *qwen_vl.norm_rules(f"{prefix}merger.ln_q", "visual.merger.ln_q"),
        *qwen_vl.norm_rules(block + "norm1", ours + "norm1"),
        *qwen_vl.norm_rules(block + "norm2", ours + "norm2"),
    ]
    for hf, nnx_name in (("merger.mlp.0", "merger.mlp_0"), ("merger.mlp.2", "merger.mlp_2")):
        rules += qwen_vl.linear_rules(prefix + hf, "visual." + nnx_name)
    for proj in ("attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        rules += qwen_vl.linear_rules(block + proj, ours + proj)
    return rules


def qwen2_5_vl_rules(config: Qwen25VLConfig) -> list[Rule]:
    """The HF <-> NNX table; the first rule for a parameter is the name export writes (the flat layout)."""
    return qwen_vl.checkpoint_rules(config, _text_rules, _vision_rules, (qwen_vl.FLAT, qwen_vl.NESTED))


_CHECKPOINTS = qwen_vl.QwenVLCheckpoints(Qwen25VLConfig, Qwen25VLForConditionalGeneration, qwen2_5_vl_rules)
read_config, abstract_model = _CHECKPOINTS.read_config, _CHECKPOINTS.abstract_model
load_qwen2_5_vl, export_qwen2_5_vl = _CHECKPOINTS.load, _CHECKPOINTS.export
write_hf_dir = qwen_vl.write_hf_dir
