"""Qwen3-VL <-> Hugging Face: the name table, loading a checkpoint dir onto a mesh, and exporting an HF dir.

Checkpoint names are those of the released Qwen3-VL checkpoints and of transformers 5.24 `save_pretrained`
(`model.language_model.*`, `model.visual.*`, `lm_head`). Directories using the flat layout (`model.layers.*`,
`visual.*`) load too (alias rules); export always writes the released layout. Reading, loading and writing are the
shared Qwen-VL ones (`vinci_jax.hf.qwen_vl`).
"""

from __future__ import annotations

from vinci_jax.hf import qwen_vl
from vinci_jax.hf.loader import Rule
from vinci_jax.models.qwen3_vl.config import Qwen3VLConfig
from vinci_jax.models.qwen3_vl.modeling import Qwen3VLForConditionalGeneration


def _merger_rules(hf: str, ours: str) -> list[Rule]:
    return qwen_vl.norm_rules(f"{hf}.norm", f"{ours}.norm", bias=True) + [
        *qwen_vl.linear_rules(f"{hf}.linear_fc1", f"{ours}.linear_fc1"),
        *qwen_vl.linear_rules(f"{hf}.linear_fc2", f"{ours}.linear_fc2"),
    ]


def _vision_rules(prefix: str) -> list[Rule]:
    block, ours = f"{prefix}blocks.{{i}}.", "visual.blocks.{i}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", "visual.patch_embed.proj.kernel", qwen_vl.PATCH_EMBED),
        Rule(f"{prefix}patch_embed.proj.bias", "visual.patch_embed.proj.bias"),
        Rule(f"{prefix}pos_embed.weight", "visual.pos_embed.embedding"),
        *qwen_vl.norm_rules(block + "norm1", ours + "norm1", bias=True),
        *qwen_vl.norm_rules(block + "norm2", ours + "norm2", bias=True),
    ]
    for proj in ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2"):
        rules += qwen_vl.linear_rules(block + proj, ours + proj)
    rules += _merger_rules(f"{prefix}merger", "visual.merger")
    rules += _merger_rules(f"{prefix}deepstack_merger_list.{{k}}", "visual.deepstack_merger_list.{k}")
    return rules


def qwen3_vl_rules(config: Qwen3VLConfig) -> list[Rule]:
    """The HF <-> NNX table; the first rule for a parameter is the name export writes (the released layout)."""
    bias = config.text.attention_bias

    def text(prefix: str) -> list[Rule]:
        return qwen_vl.text_rules(prefix, qkv_bias=bias, o_bias=bias, qk_norm=True)

    return qwen_vl.checkpoint_rules(config, text, _vision_rules, (qwen_vl.NESTED, qwen_vl.FLAT))


_CHECKPOINTS = qwen_vl.QwenVLCheckpoints(Qwen3VLConfig, Qwen3VLForConditionalGeneration, qwen3_vl_rules)
read_config, abstract_model = _CHECKPOINTS.read_config, _CHECKPOINTS.abstract_model
load_qwen3_vl, export_qwen3_vl = _CHECKPOINTS.load, _CHECKPOINTS.export
write_hf_dir = qwen_vl.write_hf_dir
