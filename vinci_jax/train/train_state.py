"""The train state as a plain pytree, and where each of its leaves lives on the mesh.

State = {"params": pure dict of the model's nnx.Params, "opt_state": optax state, "step": int32 scalar}. Plain dicts
(not nnx Variables) so optax, jax.jit and Orbax see ordinary arrays; the model is rebuilt inside the step with
`nnx.merge(graphdef, nnx.State(params), rest)`. Shared by SFT and ViRL.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vinci_jax import sharding
from vinci_jax.train.optimizer import path_str

TrainState = dict[str, Any]


@dataclasses.dataclass
class SplitModel:
    """A model taken apart: the static graph, its parameters (pure dict) and every other variable (buffers)."""

    graphdef: Any
    params: dict[str, Any]
    rest: nnx.State
    param_shardings: dict[str, Any] | None = None

    def merge(self, params: dict[str, Any] | None = None) -> nnx.Module:
        return nnx.merge(self.graphdef, nnx.State(self.params if params is None else params), self.rest)


def split_model(model: nnx.Module, mesh: Mesh | None = None) -> SplitModel:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shardings = sharding.state_shardings(params, mesh).to_pure_dict() if mesh is not None else None
    return SplitModel(graphdef, params.to_pure_dict(), rest, shardings)


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def _opt_leaf_sharding(
    path: tuple[Any, ...], leaf: Any, by_path: dict[str, Any], mesh: Mesh, replicated: NamedSharding
) -> NamedSharding:
    """An optimizer leaf whose path ends with a parameter's path (mu, nu, ...) shares that parameter's sharding."""
    names = path_str(path).split("/")
    for start in range(len(names)):
        hit = by_path.get("/".join(names[start:]))
        if hit is not None and tuple(hit[1]) == tuple(jnp.shape(leaf)):
            return hit[0]
    return replicated


def train_state_shardings(
    params_abstract: Any, param_shardings: Any, optimizer: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    """Shardings for the whole train state: params from their logical axes, optimizer moments like their params,
    scalars (counts, step) replicated over the mesh (never SingleDeviceSharding, which breaks sharded restores)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    by_path: dict[str, Any] = {}
    for (path, leaf), shd in zip(
        jax.tree_util.tree_flatten_with_path(params_abstract)[0], jax.tree.leaves(param_shardings), strict=True
    ):
        by_path[path_str(path)] = (shd, jnp.shape(leaf))
    opt_abstract = jax.eval_shape(optimizer.init, params_abstract)
    opt_shardings = jax.tree_util.tree_map_with_path(
        lambda p, leaf: _opt_leaf_sharding(p, leaf, by_path, mesh, replicated), opt_abstract
    )
    return {"params": param_shardings, "opt_state": opt_shardings, "step": replicated}


def abstract_train_state(
    params_abstract: Any, optimizer: optax.GradientTransformation, shardings: TrainState
) -> TrainState:
    """ShapeDtypeStructs carrying the target shardings: what Orbax restores into (any mesh shape)."""
    state = {
        "params": params_abstract,
        "opt_state": jax.eval_shape(optimizer.init, params_abstract),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
