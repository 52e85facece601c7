"""Build the policy model for training from `config.model`: random init from a preset (created directly on its
shardings, never as a full host copy) or weights from an HF directory."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from vinci_jax import sharding


def _dtype(name: str) -> Any:
    return jnp.dtype(name)


def _constructor(config: ml_collections.ConfigDict) -> Callable[[nnx.Rngs], nnx.Module]:
    dtype, param_dtype = _dtype(config.dtype), _dtype(config.param_dtype)
    if config.preset == "standin":
        from vinci_jax.train.standin import StandInConfig, StandInTextLM

        return lambda rngs: StandInTextLM(
            StandInConfig.tiny(), rngs=rngs, dtype=dtype, param_dtype=param_dtype, remat_policy=config.remat
        )
    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration

    factory = getattr(Qwen25VLConfig, config.preset, None)
    if factory is None:
        raise ValueError(f"model.preset {config.preset!r} is not a Qwen25VLConfig preset (nor 'standin')")
    model_config = factory()
    kwargs = _remat_kwargs(Qwen25VLForConditionalGeneration, config.remat)
    return lambda rngs: Qwen25VLForConditionalGeneration(
        model_config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, **kwargs
    )


def _remat_kwargs(model_cls: type, remat: str) -> dict[str, str]:
    """Pass `remat_policy` when the model supports it; warn (and train without remat) when it does not."""
    if remat == "none":
        return {}
    if "remat_policy" in inspect.signature(model_cls.__init__).parameters:
        return {"remat_policy": remat}
    logging.warning("%s has no remat_policy argument; model.remat=%s ignored", model_cls.__name__, remat)
    return {}


def init_sharded(constructor: Callable[[nnx.Rngs], nnx.Module], mesh: Mesh, seed: int) -> nnx.Module:
    """Random init compiled with output shardings: each device materialises only its own shards."""
    abstract = nnx.eval_shape(lambda: constructor(nnx.Rngs(seed)))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = sharding.state_shardings(abstract_state, mesh)

    def init() -> nnx.State:
        return nnx.state(constructor(nnx.Rngs(seed)))

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def build_model(config: ml_collections.ConfigDict, mesh: Mesh, seed: int) -> nnx.Module:
    """The model of `config` (the `model` block) placed on `mesh`."""
    if config.hf_dir:
        from vinci_jax.models.qwen2_5_vl import load_qwen2_5_vl

        kwargs: dict[str, Any] = {"mesh": mesh, "dtype": _dtype(config.dtype)}
        accepted = inspect.signature(load_qwen2_5_vl).parameters
        if "param_dtype" in accepted:
            kwargs["param_dtype"] = _dtype(config.param_dtype)
        if config.remat != "none" and "remat_policy" in accepted:
            kwargs["remat_policy"] = config.remat
        return load_qwen2_5_vl(config.hf_dir, **kwargs)
    return init_sharded(_constructor(config), mesh, seed)
