"""Load a policy (model + its processor) from what users point at: an HF directory or a training checkpoint.

One function so that `generate`, `evaluate` and the ViRL initialisation accept the same `--model` argument. The model
family (Qwen2.5-VL or Qwen3-VL) is read from the config.json of the directory (a training workdir holds one, written
by the trainers), so the caller never names it.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from vinci_jax.models import families
from vinci_jax.paths import as_path, local_copy
from vinci_jax.processing import QwenProcessor


def is_hf_dir(path: str | os.PathLike) -> bool:
    path = as_path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def checkpoint_config_dir(path: str | os.PathLike | None) -> epath.Path | None:
    """The directory holding the config.json of a checkpoint: an HF dir itself, or for a training checkpoint
    (WORKDIR, WORKDIR/checkpoints, a step dir or an item dir in it) the nearest of those levels that has one.

    Ancestors count only up to the workdir (a `checkpoints` dir or the dir holding one), so an unrelated
    config.json further up is never picked.
    """
    if not path:
        return None
    path = as_path(path)
    candidates = [path]
    for parent in path.parents[:3]:
        if parent.name == "checkpoints" or (parent / "checkpoints").is_dir():
            candidates.append(parent)
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def checkpoint_family(path: str | os.PathLike | None) -> families.ModelFamily | None:
    """The family a checkpoint's config.json names (see `checkpoint_config_dir`), or None without one."""
    config_dir = checkpoint_config_dir(path)
    return families.family_of_hf_dir(config_dir) if config_dir is not None else None


def load_processor(path: str | os.PathLike | None, family: str | families.ModelFamily | None = None) -> QwenProcessor:
    """The processor saved beside a checkpoint when there is one, else the family's offline default.

    The family is `family`, else the one the checkpoint's config.json names, else Qwen2.5-VL.
    """
    if isinstance(family, str):
        family = families.get_family(family) if family else None
    family = family or checkpoint_family(path) or families.get_family(families.DEFAULT_FAMILY)
    if path is not None and (as_path(path) / "tokenizer.json").is_file():
        return family.processor(local_copy(path))
    return family.processor(None)


def load_policy(
    path: str | os.PathLike, *, mesh: Mesh | None = None, dtype: Any = jnp.float32, config: Any = None
) -> tuple[nnx.Module, QwenProcessor]:
    """(model, processor) from an HF checkpoint directory or an Orbax training checkpoint (workdir or step dir).

    An Orbax checkpoint needs the model config: a config.json beside it (trainers write one into their workdir), or
    `config` (e.g. the run's own).
    """
    path = as_path(path)
    if is_hf_dir(path):
        family = families.family_of_hf_dir(path)
        return family.load(local_copy(path), mesh=mesh, dtype=dtype), load_processor(path, family)
    model = _load_orbax(path, mesh, dtype, config)
    return model, load_processor(_processor_dir(path), families.family_of_model(model))


def _processor_dir(path: epath.Path) -> epath.Path | None:
    """Where tokenizer files of a training checkpoint live: the checkpoint dir or one of its parents."""
    for candidate in (path, *path.parents[:3]):
        if (candidate / "tokenizer.json").is_file():
            return candidate
    return None


def restore_targets(param_state: nnx.State, mesh: Mesh | None) -> dict[str, Any]:
    """{NNX path: the sharding a restore writes that parameter into}: its logical sharding over `mesh` (each
    device reads only its shard), or the first device without a mesh. The Orbax and HF loads both place by this
    rule, so checking it on an abstract 8B model shows what a real load would put on each device."""
    import jax

    from vinci_jax import sharding
    from vinci_jax.hf.loader import path_str

    flat = nnx.to_flat_state(param_state)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return {path_str(k): device for k, _ in flat}
    return {path_str(k): sharding.variable_sharding(v, mesh) for k, v in flat}


def _load_orbax(path: epath.Path, mesh: Mesh | None, dtype: Any, config: Any = None) -> nnx.Module:
    """Model parameters from an Orbax checkpoint (the latest step of a workdir or a step dir) into a new model.

    Each parameter is restored by Orbax straight into its target sharding (its logical axes over `mesh`; without a
    mesh, the first device) and dtype: at 8B the whole set (35 GB) never sits on one device or in host memory."""

    from vinci_jax.hf.export import orbax_model_config, restore_orbax_params
    from vinci_jax.hf.loader import path_str

    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    config = config if config is not None else orbax_model_config(root)
    abstract = families.family_of_config(config).abstract_model(config, dtype, jnp.float32)
    graphdef, state = nnx.split(abstract)
    param_state = nnx.state(abstract, nnx.Param)
    by_name = restore_targets(param_state, mesh)
    dtypes = {path_str(k): v.get_value().dtype for k, v in nnx.to_flat_state(param_state)}
    params, config = restore_orbax_params(root, config, shardings=by_name, dtypes=dtypes)
    for key, variable in nnx.to_flat_state(state):
        name = path_str(key)
        if isinstance(variable, nnx.Param):
            variable.set_value(params[name])
        else:  # non-parameter state (none today) would be rebuilt here
            raise ValueError(f"checkpoint restore does not know how to rebuild state {name!r}")
    return nnx.merge(graphdef, state)
