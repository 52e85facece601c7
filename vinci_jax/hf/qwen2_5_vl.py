"""Qwen2.5-VL <-> Hugging Face: the name table, loading a checkpoint dir onto a mesh, and exporting an HF dir.

Checkpoint names are those of the released checkpoints and of transformers 5.x `save_pretrained`
(`model.layers.*`, `model.embed_tokens`, `visual.*`, `lm_head`). Directories written by transformers 4.5x use
`model.language_model.*` / `model.visual.*`; those load too (alias rules), and export always writes the former.
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

from vinci_jax.hf.loader import IDENTITY, LINEAR, Rule, Transform, iter_hf_tensors, load_model, write_safetensors
from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from vinci_jax.models.qwen2_5_vl.modeling import Qwen25VLForConditionalGeneration
from vinci_jax.paths import as_path

# Conv3d weight [hidden, C, T, P, P] <-> the tower's patch kernel [C, T, P, P, hidden] (see vision.py's table).
PATCH_EMBED = Transform(lambda w: np.moveaxis(w, 0, -1), lambda k: np.moveaxis(k, -1, 0))


def _text_rules(prefix: str) -> list[Rule]:
    layer = f"{prefix}layers.{{i}}."
    rules = [
        Rule(f"{prefix}embed_tokens.weight", "model.embed_tokens.embedding"),
        Rule(f"{prefix}norm.weight", "model.norm.scale"),
        Rule(layer + "input_layernorm.weight", "model.layers.{i}.input_layernorm.scale"),
        Rule(layer + "post_attention_layernorm.weight", "model.layers.{i}.post_attention_layernorm.scale"),
        Rule(layer + "self_attn.o_proj.weight", "model.layers.{i}.self_attn.o_proj.kernel", LINEAR),
    ]
    for proj in ("q_proj", "k_proj", "v_proj"):
        rules.append(Rule(layer + f"self_attn.{proj}.weight", f"model.layers.{{i}}.self_attn.{proj}.kernel", LINEAR))
        rules.append(Rule(layer + f"self_attn.{proj}.bias", f"model.layers.{{i}}.self_attn.{proj}.bias"))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rules.append(Rule(layer + f"mlp.{proj}.weight", f"model.layers.{{i}}.mlp.{proj}.kernel", LINEAR))
    return rules


def _vision_rules(prefix: str) -> list[Rule]:
    block = f"{prefix}blocks.{{i}}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", "visual.patch_embed.proj.kernel", PATCH_EMBED),
        Rule(f"{prefix}merger.ln_q.weight", "visual.merger.ln_q.scale"),
        Rule(block + "norm1.weight", "visual.blocks.{i}.norm1.scale"),
        Rule(block + "norm2.weight", "visual.blocks.{i}.norm2.scale"),
    ]
    for hf, ours in (("merger.mlp.0", "merger.mlp_0"), ("merger.mlp.2", "merger.mlp_2")):
        rules.append(Rule(f"{prefix}{hf}.weight", f"visual.{ours}.kernel", LINEAR))
        rules.append(Rule(f"{prefix}{hf}.bias", f"visual.{ours}.bias", IDENTITY))
    for proj in ("attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        rules.append(Rule(block + f"{proj}.weight", f"visual.blocks.{{i}}.{proj}.kernel", LINEAR))
        rules.append(Rule(block + f"{proj}.bias", f"visual.blocks.{{i}}.{proj}.bias"))
    return rules


def qwen2_5_vl_rules(config: Qwen25VLConfig) -> list[Rule]:
    """The HF <-> NNX table; the first rule for a parameter is the name export writes."""
    rules = _text_rules("model.") + _vision_rules("visual.")
    if not config.tie_word_embeddings:
        rules.append(Rule("lm_head.weight", "lm_head.kernel", LINEAR))
    # transformers 4.5x save layout
    return rules + _text_rules("model.language_model.") + _vision_rules("model.visual.")


def read_config(hf_dir: str | os.PathLike) -> Qwen25VLConfig:
    path = as_path(hf_dir) / "config.json"  # gs:// too
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; a Qwen2.5-VL checkpoint dir needs its config.json")
    return Qwen25VLConfig.from_hf(json.loads(path.read_text()))


def abstract_model(
    config: Qwen25VLConfig, dtype: Any = jnp.float32, param_dtype: Any = None, remat_policy: str = "none"
) -> nnx.Module:
    """The model's shapes without allocating it (`nnx.eval_shape`)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    return nnx.eval_shape(
        lambda: Qwen25VLForConditionalGeneration(
            config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy
        )
    )


def load_qwen2_5_vl(
    hf_dir: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    config: Qwen25VLConfig | None = None,
    remat_policy: str = "none",
) -> Qwen25VLForConditionalGeneration:
    """Load an HF Qwen2.5-VL checkpoint dir; parameters in `param_dtype` (default `dtype`) placed over `mesh`.

    `dtype` is the compute dtype; `remat_policy` as in the model. Tensors stream one at a time onto their logical
    shardings (see hf.loader).
    """
    config = config or read_config(hf_dir)
    param_dtype = dtype if param_dtype is None else param_dtype
    target = abstract_model(config, dtype, param_dtype, remat_policy)
    ignore = ["lm_head.weight"] if config.tie_word_embeddings else []
    return load_model(hf_dir, target, qwen2_5_vl_rules(config), mesh=mesh, dtype=param_dtype, ignore_hf=ignore)


# ---- export ----------------------------------------------------------------------------------------------------------

# Files a checkpoint dir carries besides weights and config.json; copied verbatim from a source dir on export.
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)

_DTYPE_NAMES = {"float32": np.float32, "bfloat16": jnp.bfloat16, "float16": np.float16}


def default_generation_config(config: Qwen25VLConfig) -> dict[str, Any]:
    """What the released Instruct checkpoints' generation_config.json holds about special tokens."""
    eos = config.text.eos_token_id
    bos = config.text.bos_token_id
    eos_ids = [eos] + ([bos] if bos is not None and bos != eos else []) if eos is not None else None
    return {"bos_token_id": bos, "eos_token_id": eos_ids, "pad_token_id": bos, "do_sample": False}


def write_hf_dir(
    tensors: Iterable[tuple[str, np.ndarray]],
    config: Qwen25VLConfig,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    source_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 2**30,
) -> Path:
    """config.json + generation_config.json + sharded safetensors (+ tokenizer/processor files of `source_dir`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"export dtype {dtype!r} is not one of {sorted(_DTYPE_NAMES)}")
    np_dtype = _DTYPE_NAMES[dtype]
    write_safetensors(((n, a.astype(np_dtype, copy=False)) for n, a in tensors), out, max_shard_bytes)
    (out / "config.json").write_text(json.dumps(config.to_hf(dtype), indent=2, sort_keys=True) + "\n")
    copied = []
    if source_dir is not None:
        for name in SIDE_FILES:
            source = as_path(source_dir) / name  # a gs:// training workdir too
            if source.is_file():
                source.copy(as_path(out / name), overwrite=True)
                copied.append(name)
    if "generation_config.json" not in copied:
        (out / "generation_config.json").write_text(json.dumps(default_generation_config(config), indent=2) + "\n")
    return out


def export_qwen2_5_vl(
    model: Qwen25VLForConditionalGeneration | nnx.State,
    out_dir: str | os.PathLike,
    *,
    config: Qwen25VLConfig | None = None,
    dtype: str = "bfloat16",
    source_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 2**30,
) -> Path:
    """Write an in-memory model (or its nnx.State plus `config`) as an HF dir transformers loads.

    Multi-host: call it on every process (parameters are gathered collectively); process 0 writes.
    """
    if config is None:
        if not isinstance(model, Qwen25VLForConditionalGeneration):
            raise ValueError("exporting an nnx.State needs config=")
        config = model.config
    rules = qwen2_5_vl_rules(config)
    if jax.process_count() > 1 and jax.process_index() != 0:
        # every process takes part in gathering sharded parameters; only process 0 writes files
        for _ in iter_hf_tensors(model, rules):
            pass
        return Path(out_dir)
    return write_hf_dir(
        iter_hf_tensors(model, rules), config, out_dir, dtype=dtype, source_dir=source_dir,
        max_shard_bytes=max_shard_bytes,
    )  # fmt: skip
