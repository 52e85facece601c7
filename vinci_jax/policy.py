"""Load a policy (model + its processor) from what users point at: an HF directory or a training checkpoint.

One function so that `generate`, `evaluate` and the ViRL initialisation accept the same `--model` argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vinci_jax.processing import QwenProcessor


def is_hf_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def load_processor(path: str | os.PathLike | None) -> QwenProcessor:
    """The processor saved beside a checkpoint when there is one, else the offline Qwen2.5-VL default."""
    if path is not None and (Path(path) / "tokenizer.json").is_file():
        return QwenProcessor.from_pretrained(path)
    return QwenProcessor()


def load_policy(
    path: str | os.PathLike, *, mesh: Mesh | None = None, dtype: Any = jnp.float32, config: Any = None
) -> tuple[nnx.Module, QwenProcessor]:
    """(model, processor) from an HF checkpoint directory or an Orbax training checkpoint (workdir or step dir).

    An Orbax checkpoint needs the model config: a config.json beside it, or `config` (e.g. the run's own).
    """
    path = Path(path)
    if is_hf_dir(path):
        from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl

        return load_qwen2_5_vl(path, mesh=mesh, dtype=dtype), load_processor(path)
    return _load_orbax(path, mesh, dtype, config), load_processor(_processor_dir(path))


def _processor_dir(path: Path) -> Path | None:
    """Where tokenizer files of a training checkpoint live: the checkpoint dir or one of its parents."""
    for candidate in (path, *path.parents[:3]):
        if (candidate / "tokenizer.json").is_file():
            return candidate
    return None


def _load_orbax(path: Path, mesh: Mesh | None, dtype: Any, config: Any = None) -> nnx.Module:
    """Model parameters from an Orbax checkpoint (the latest step of a workdir or a step dir) into a new model."""
    import jax

    from vinci_jax import sharding
    from vinci_jax.hf.export import restore_orbax_params
    from vinci_jax.hf.loader import path_str
    from vinci_jax.hf.qwen2_5_vl import abstract_model

    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    params, config = restore_orbax_params(root, config)
    graphdef, state = nnx.split(abstract_model(config, dtype, jnp.float32))
    for key, variable in nnx.to_flat_state(state):
        name = path_str(key)
        if isinstance(variable, nnx.Param):
            variable.set_value(jnp.asarray(params[name]))
        else:  # non-parameter state (none today) would be rebuilt here
            raise ValueError(f"checkpoint restore does not know how to rebuild state {name!r}")
    model = nnx.merge(graphdef, state)
    if mesh is not None:
        sharding.shard_module(model, mesh)
    else:
        nnx.update(model, jax.device_put(nnx.state(model)))
    return model
