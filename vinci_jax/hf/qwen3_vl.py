"""Qwen3-VL <-> Hugging Face: the name table, loading a checkpoint dir onto a mesh, and exporting an HF dir.

Checkpoint names are those of the released Qwen3-VL checkpoints and of transformers 5.24 `save_pretrained`
(`model.language_model.*`, `model.visual.*`, `lm_head`). Directories using the flat layout (`model.layers.*`,
`visual.*`) load too (alias rules); export always writes the released layout. Loading, streaming and export are the
shared loader's (`vinci_jax.hf.loader`) and the Qwen2.5-VL module's side-file handling.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vinci_jax.hf import qwen2_5_vl as _qwen25
from vinci_jax.hf.loader import IDENTITY, LINEAR, Rule, iter_hf_tensors, load_model
from vinci_jax.hf.qwen2_5_vl import PATCH_EMBED
from vinci_jax.models.qwen3_vl.config import Qwen3VLConfig
from vinci_jax.models.qwen3_vl.modeling import Qwen3VLForConditionalGeneration
from vinci_jax.paths import as_path


def _text_rules(prefix: str, config: Qwen3VLConfig) -> list[Rule]:
    layer = f"{prefix}layers.{{i}}."
    ours = "model.layers.{i}."
    rules = [
        Rule(f"{prefix}embed_tokens.weight", "model.embed_tokens.embedding"),
        Rule(f"{prefix}norm.weight", "model.norm.scale"),
        Rule(layer + "input_layernorm.weight", ours + "input_layernorm.scale"),
        Rule(layer + "post_attention_layernorm.weight", ours + "post_attention_layernorm.scale"),
        Rule(layer + "self_attn.q_norm.weight", ours + "self_attn.q_norm.scale"),
        Rule(layer + "self_attn.k_norm.weight", ours + "self_attn.k_norm.scale"),
    ]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        rules.append(Rule(layer + f"self_attn.{proj}.weight", ours + f"self_attn.{proj}.kernel", LINEAR))
        if config.text.attention_bias:
            rules.append(Rule(layer + f"self_attn.{proj}.bias", ours + f"self_attn.{proj}.bias"))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rules.append(Rule(layer + f"mlp.{proj}.weight", ours + f"mlp.{proj}.kernel", LINEAR))
    return rules


def _merger_rules(hf: str, ours: str) -> list[Rule]:
    return [
        Rule(f"{hf}.norm.weight", f"{ours}.norm.scale"),
        Rule(f"{hf}.norm.bias", f"{ours}.norm.bias"),
        Rule(f"{hf}.linear_fc1.weight", f"{ours}.linear_fc1.kernel", LINEAR),
        Rule(f"{hf}.linear_fc1.bias", f"{ours}.linear_fc1.bias"),
        Rule(f"{hf}.linear_fc2.weight", f"{ours}.linear_fc2.kernel", LINEAR),
        Rule(f"{hf}.linear_fc2.bias", f"{ours}.linear_fc2.bias"),
    ]


def _vision_rules(prefix: str) -> list[Rule]:
    block = f"{prefix}blocks.{{i}}."
    ours = "visual.blocks.{i}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", "visual.patch_embed.proj.kernel", PATCH_EMBED),
        Rule(f"{prefix}patch_embed.proj.bias", "visual.patch_embed.proj.bias"),
        Rule(f"{prefix}pos_embed.weight", "visual.pos_embed.embedding", IDENTITY),
    ]
    for norm in ("norm1", "norm2"):
        rules.append(Rule(block + f"{norm}.weight", ours + f"{norm}.scale"))
        rules.append(Rule(block + f"{norm}.bias", ours + f"{norm}.bias"))
    for proj in ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2"):
        rules.append(Rule(block + f"{proj}.weight", ours + f"{proj}.kernel", LINEAR))
        rules.append(Rule(block + f"{proj}.bias", ours + f"{proj}.bias"))
    rules += _merger_rules(f"{prefix}merger", "visual.merger")
    rules += _merger_rules(f"{prefix}deepstack_merger_list.{{k}}", "visual.deepstack_merger_list.{k}")
    return rules


def qwen3_vl_rules(config: Qwen3VLConfig) -> list[Rule]:
    """The HF <-> NNX table; the first rule for a parameter is the name export writes."""
    rules = _text_rules("model.language_model.", config) + _vision_rules("model.visual.")
    if not config.tie_word_embeddings:
        rules.append(Rule("lm_head.weight", "lm_head.kernel", LINEAR))
    return rules + _text_rules("model.", config) + _vision_rules("visual.")  # flat layout, load only


def read_config(hf_dir: str | os.PathLike) -> Qwen3VLConfig:
    path = as_path(hf_dir) / "config.json"  # gs:// too
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; a Qwen3-VL checkpoint dir needs its config.json")
    return Qwen3VLConfig.from_hf(json.loads(path.read_text()))


def abstract_model(
    config: Qwen3VLConfig, dtype: Any = jnp.float32, param_dtype: Any = None, remat_policy: str = "none"
) -> nnx.Module:
    """The model's shapes without allocating it (`nnx.eval_shape`)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    return nnx.eval_shape(
        lambda: Qwen3VLForConditionalGeneration(
            config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy
        )
    )


def load_qwen3_vl(
    hf_dir: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    config: Qwen3VLConfig | None = None,
    remat_policy: str = "none",
) -> Qwen3VLForConditionalGeneration:
    """Load an HF Qwen3-VL checkpoint dir; parameters in `param_dtype` (default `dtype`) placed over `mesh`.

    `dtype` is the compute dtype; `remat_policy` as in the model. Tensors stream one at a time onto their logical
    shardings (see hf.loader)."""
    config = config or read_config(hf_dir)
    param_dtype = dtype if param_dtype is None else param_dtype
    target = abstract_model(config, dtype, param_dtype, remat_policy)
    ignore = ["lm_head.weight"] if config.tie_word_embeddings else []
    return load_model(hf_dir, target, qwen3_vl_rules(config), mesh=mesh, dtype=param_dtype, ignore_hf=ignore)


def default_generation_config(config: Qwen3VLConfig) -> dict[str, Any]:
    """Special-token part of the released Instruct checkpoints' generation_config.json."""
    return _qwen25.default_generation_config(config)


def write_hf_dir(
    tensors: Iterable[tuple[str, np.ndarray]],
    config: Qwen3VLConfig,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    source_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 2**30,
) -> Path:
    """config.json + generation_config.json + sharded safetensors (+ tokenizer/processor files of `source_dir`)."""
    return _qwen25.write_hf_dir(
        tensors, config, out_dir, dtype=dtype, source_dir=source_dir, max_shard_bytes=max_shard_bytes
    )


def export_qwen3_vl(
    model: Qwen3VLForConditionalGeneration | nnx.State,
    out_dir: str | os.PathLike,
    *,
    config: Qwen3VLConfig | None = None,
    dtype: str = "bfloat16",
    source_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 2**30,
) -> Path:
    """Write an in-memory model (or its nnx.State plus `config`) as an HF dir transformers loads."""
    if config is None:
        if not isinstance(model, Qwen3VLForConditionalGeneration):
            raise ValueError("exporting an nnx.State needs config=")
        config = model.config
    rules = qwen3_vl_rules(config)
    if jax.process_count() > 1 and jax.process_index() != 0:
        # every process takes part in gathering sharded parameters; only process 0 writes files
        for _ in iter_hf_tensors(model, rules):
            pass
        return Path(out_dir)
    return write_hf_dir(
        iter_hf_tensors(model, rules), config, out_dir, dtype=dtype, source_dir=source_dir,
        max_shard_bytes=max_shard_bytes,
    )  # fmt: skip
