"""What the two Qwen-VL families' HF modules (`qwen2_5_vl.py`, `qwen3_vl.py`) share: the name-table pieces, reading
config.json, the abstract model, loading onto a mesh, and writing an HF dir (weights, config.json, side files).

A family's module keeps its name table (what its modules are called in the checkpoints) and builds its
`read_config` / `abstract_model` / `load_*` / `export_*` from one `QwenVLCheckpoints`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vinci_jax.hf.loader import LINEAR, Rule, Transform, iter_hf_tensors, load_model, write_safetensors
from vinci_jax.paths import as_path

# Conv3d weight [hidden, C, T, P, P] <-> the towers' patch kernel [C, T, P, P, hidden] (see qwen_vl/vision.py).
PATCH_EMBED = Transform(lambda w: np.moveaxis(w, 0, -1), lambda k: np.moveaxis(k, -1, 0))

# (text prefix, vision prefix) of the two checkpoint layouts: transformers 5.x / the Qwen2.5-VL release, and the
# Qwen3-VL release / transformers 4.5x.
FLAT = ("model.", "visual.")
NESTED = ("model.language_model.", "model.visual.")


def linear_rules(hf: str, ours: str, bias: bool = True) -> list[Rule]:
    """A torch Linear: weight [out, in] <-> kernel [in, out], and its bias."""
    return [Rule(f"{hf}.weight", f"{ours}.kernel", LINEAR)] + ([Rule(f"{hf}.bias", f"{ours}.bias")] if bias else [])


def norm_rules(hf: str, ours: str, bias: bool = False) -> list[Rule]:
    """An RMSNorm (weight <-> scale) or, with `bias`, a LayerNorm."""
    return [Rule(f"{hf}.weight", f"{ours}.scale")] + ([Rule(f"{hf}.bias", f"{ours}.bias")] if bias else [])


def text_rules(prefix: str, *, qkv_bias: bool, o_bias: bool, qk_norm: bool) -> list[Rule]:
    """The decoder's table under HF `prefix` (`QwenAttention`'s options: biases, q/k norm)."""
    layer, ours = f"{prefix}layers.{{i}}.", "model.layers.{i}."
    rules = [
        Rule(f"{prefix}embed_tokens.weight", "model.embed_tokens.embedding"),
        *norm_rules(f"{prefix}norm", "model.norm"),
        *norm_rules(layer + "input_layernorm", ours + "input_layernorm"),
        *norm_rules(layer + "post_attention_layernorm", ours + "post_attention_layernorm"),
    ]
    if qk_norm:
        rules += norm_rules(layer + "self_attn.q_norm", ours + "self_attn.q_norm")
        rules += norm_rules(layer + "self_attn.k_norm", ours + "self_attn.k_norm")
    for proj, bias in (("q_proj", qkv_bias), ("k_proj", qkv_bias), ("v_proj", qkv_bias), ("o_proj", o_bias)):
        rules += linear_rules(layer + f"self_attn.{proj}", ours + f"self_attn.{proj}", bias)
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rules += linear_rules(layer + f"mlp.{proj}", ours + f"mlp.{proj}", bias=False)
    return rules


def checkpoint_rules(
    config: Any, text: Callable[[str], list[Rule]], vision: Callable[[str], list[Rule]],
    layouts: tuple[tuple[str, str], tuple[str, str]],
) -> list[Rule]:  # fmt: skip
    """The HF <-> NNX table: the first layout's text and vision rules (what export writes), lm_head when untied,
    then the second layout's (load only)."""
    (text_prefix, vision_prefix), (other_text, other_vision) = layouts
    rules = text(text_prefix) + vision(vision_prefix)
    if not config.tie_word_embeddings:
        rules += linear_rules("lm_head", "lm_head", bias=False)
    return rules + text(other_text) + vision(other_vision)


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


def default_generation_config(config: Any) -> dict[str, Any]:
    """What the released Instruct checkpoints' generation_config.json holds about special tokens."""
    eos = config.text.eos_token_id
    bos = config.text.bos_token_id
    eos_ids = [eos] + ([bos] if bos is not None and bos != eos else []) if eos is not None else None
    return {"bos_token_id": bos, "eos_token_id": eos_ids, "pad_token_id": bos, "do_sample": False}


def write_hf_dir(
    tensors: Iterable[tuple[str, np.ndarray]],
    config: Any,
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


@dataclasses.dataclass(frozen=True)
class QwenVLCheckpoints:
    """A family's checkpoint functions, from its config class, model class and name table (`rules(config)`)."""

    config_class: type
    model_class: type
    rules: Callable[[Any], list[Rule]]

    def read_config(self, hf_dir: str | os.PathLike) -> Any:
        path = as_path(hf_dir) / "config.json"  # gs:// too
        if not path.exists():
            name = self.config_class.display_name
            raise FileNotFoundError(f"{path} not found; a {name} checkpoint dir needs its config.json")
        return self.config_class.from_hf(json.loads(path.read_text()))

    def abstract_model(
        self, config: Any, dtype: Any = jnp.float32, param_dtype: Any = None, remat_policy: str = "none"
    ) -> nnx.Module:
        """The model's shapes without allocating it (`nnx.eval_shape`)."""
        param_dtype = dtype if param_dtype is None else param_dtype
        return nnx.eval_shape(
            lambda: self.model_class(
                config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy
            )
        )

    def load(
        self, hf_dir: str | os.PathLike, *, mesh: Mesh | None = None, dtype: Any = jnp.float32, param_dtype: Any = None,
        config: Any = None, remat_policy: str = "none",
    ) -> Any:  # fmt: skip
        """Load an HF checkpoint dir; parameters in `param_dtype` (default `dtype`) placed over `mesh`.

        `dtype` is the compute dtype; `remat_policy` as in the model. Tensors stream one at a time onto their
        logical shardings (see hf.loader); a tied checkpoint's `lm_head.weight`, if present, is ignored.
        """
        config = config or self.read_config(hf_dir)
        param_dtype = dtype if param_dtype is None else param_dtype
        target = self.abstract_model(config, dtype, param_dtype, remat_policy)
        ignore = ["lm_head.weight"] if config.tie_word_embeddings else []
        return load_model(hf_dir, target, self.rules(config), mesh=mesh, dtype=param_dtype, ignore_hf=ignore)

    def export(
        self, model: Any, out_dir: str | os.PathLike, *, config: Any = None, dtype: str = "bfloat16",
        source_dir: str | os.PathLike | None = None, max_shard_bytes: int = 2**30,
    ) -> Path:  # fmt: skip
        """Write an in-memory model (or its nnx.State plus `config`) as an HF dir transformers loads.

        Multi-host: call it on every process (parameters are gathered collectively); process 0 writes.
        """
        if config is None:
            if not isinstance(model, self.model_class):
                raise ValueError("exporting an nnx.State needs config=")
            config = model.config
        rules = self.rules(config)
        if jax.process_count() > 1 and jax.process_index() != 0:
            # every process takes part in gathering sharded parameters; only process 0 writes files
            for _ in iter_hf_tensors(model, rules):
                pass
            return Path(out_dir)
        return write_hf_dir(
            iter_hf_tensors(model, rules), config, out_dir, dtype=dtype, source_dir=source_dir,
            max_shard_bytes=max_shard_bytes,
        )  # fmt: skip
