"""DINOv2 safetensors <-> NNX mapping table and loader.

Names are the ones HF writes to disk (`save_pretrained` keeps the original DINOv2 layout: `attention.attention.query`,
`attention.output.dense`, fused SwiGLU `mlp.weights_in`), which the NNX module mirrors, so each rule only renames
`weight` to `kernel`/`scale` and transposes.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vinci_jax.hf.loader import CONV, IDENTITY, LINEAR, Rule, load_model
from vinci_jax.models.dinov2 import Dinov2Config, Dinov2Model
from vinci_jax.paths import as_path

_LINEARS = (
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "mlp.fc1",
    "mlp.fc2",
    "mlp.weights_in",
    "mlp.weights_out",
)


def _rules() -> tuple[Rule, ...]:
    rules = [
        Rule("embeddings.cls_token", "embeddings.cls_token"),
        Rule("embeddings.mask_token", "embeddings.mask_token"),
        Rule("embeddings.position_embeddings", "embeddings.position_embeddings"),
        Rule("embeddings.register_tokens", "embeddings.register_tokens"),
        Rule("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.kernel", CONV),
        Rule("embeddings.patch_embeddings.projection.bias", "embeddings.patch_embeddings.projection.bias"),
        Rule("layernorm.weight", "layernorm.scale"),
        Rule("layernorm.bias", "layernorm.bias"),
    ]
    layer = "encoder.layer.{i}."
    for norm in ("norm1", "norm2"):
        rules.append(Rule(f"{layer}{norm}.weight", f"{layer}{norm}.scale"))
        rules.append(Rule(f"{layer}{norm}.bias", f"{layer}{norm}.bias"))
    for scale in ("layer_scale1", "layer_scale2"):
        rules.append(Rule(f"{layer}{scale}.lambda1", f"{layer}{scale}.lambda1"))
    for name in _LINEARS:
        rules.append(Rule(f"{layer}{name}.weight", f"{layer}{name}.kernel", LINEAR))
        rules.append(Rule(f"{layer}{name}.bias", f"{layer}{name}.bias", IDENTITY))
    return tuple(rules)


DINOV2_RULES: tuple[Rule, ...] = _rules()


def read_config(hf_dir: str | os.PathLike) -> Dinov2Config:
    """Dinov2Config from `hf_dir/config.json`."""
    path = as_path(hf_dir) / "config.json"  # gs:// too
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; pass a directory written by Dinov2Model.save_pretrained")
    return Dinov2Config.from_hf(json.loads(path.read_text()))


def load_dinov2(
    hf_dir: str | os.PathLike,
    *,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    mesh: Mesh | None = None,
) -> Dinov2Model:
    """A Dinov2Model filled from an HF Dinov2Model / Dinov2WithRegistersModel directory (streams the safetensors)."""
    config = read_config(hf_dir)
    abstract = nnx.eval_shape(lambda: Dinov2Model(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
    return load_model(hf_dir, abstract, DINOV2_RULES, mesh=mesh, dtype=param_dtype)
