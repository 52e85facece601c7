"""Build the policy model for training from `config.model`: random init from a preset (created directly on its
shardings, never as a full host copy) or weights from an HF directory."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
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
    if config.preset == "standin" and not config.hf_dir:
        from vinci_jax.train.standin import StandInConfig, StandInTextLM

        return lambda rngs: StandInTextLM(
            StandInConfig.tiny(), rngs=rngs, dtype=dtype, param_dtype=param_dtype, remat_policy=config.remat
        )
    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration

    if config.hf_dir:
        config_json = Path(config.hf_dir) / "config.json"
        if not config_json.exists():
            raise FileNotFoundError(f"model.hf_dir={config.hf_dir!r} has no config.json; point it at an HF checkpoint")
        model_config = Qwen25VLConfig.from_hf(json.loads(config_json.read_text()))
    else:
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


class ModelFactory:
    """How to make the model of `config.model`: abstractly (shapes + shardings, no memory), its non-parameter
    variables, and its parameters (random init compiled with output shardings, or streamed from an HF directory).

    Parameters are only materialised when a run does not resume from a checkpoint, so resuming a 7B run never pays
    for a random init it would throw away.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, seed: int):
        self.config, self.mesh, self.seed = config, mesh, seed
        self.constructor = _constructor(config)
        self.abstract = nnx.eval_shape(lambda: self.constructor(nnx.Rngs(seed)))

    def abstract_split(self) -> tuple[Any, nnx.State, nnx.State]:
        """(graphdef, abstract Param state with logical-axis metadata, abstract other variables)."""
        return nnx.split(self.abstract, nnx.Param, ...)

    def _jit_init(self, select: Callable[[nnx.Module], Any]) -> Any:
        """Run the constructor under jit and keep only `select(model)`; XLA drops the init work of the rest."""
        shardings = sharding.state_shardings(select(self.abstract), self.mesh)

        def init() -> Any:
            return select(self.constructor(nnx.Rngs(self.seed)))

        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=shardings)()

    def rest(self) -> nnx.State:
        """Non-parameter variables (buffers), which checkpoints do not store."""
        return self._jit_init(lambda m: nnx.state(m, nnx.Not(nnx.Param)))

    def params(self) -> dict[str, Any]:
        """Parameters as a pure dict on their shardings."""
        if self.config.hf_dir:
            model = self._load_hf()
            return nnx.state(model, nnx.Param).to_pure_dict()
        return self._jit_init(lambda m: nnx.state(m, nnx.Param)).to_pure_dict()

    def _load_hf(self) -> nnx.Module:
        from vinci_jax.models.qwen2_5_vl import load_qwen2_5_vl

        config = self.config
        kwargs: dict[str, Any] = {"mesh": self.mesh, "dtype": _dtype(config.dtype)}
        accepted = inspect.signature(load_qwen2_5_vl).parameters
        if "param_dtype" in accepted:
            kwargs["param_dtype"] = _dtype(config.param_dtype)
        if config.remat != "none" and "remat_policy" in accepted:
            kwargs["remat_policy"] = config.remat
        return load_qwen2_5_vl(config.hf_dir, **kwargs)
