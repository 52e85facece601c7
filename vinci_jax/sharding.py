"""Mesh construction and the one table that maps logical axis names onto mesh axes.

Parameters carry logical axis names as NNX metadata (`nnx.Param(x, logical_axes=("embed", "mlp"))`, see `param`);
activations are constrained at block boundaries with `constrain`. Only `LOGICAL_RULES` knows about the physical
mesh, so a pod layout (pure FSDP, FSDP + tensor parallel, ...) is a change of mesh shape, not of model code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# logical axis -> mesh axes it is split over (tried in order; a mesh axis is used once per array).
LOGICAL_RULES: dict[str, tuple[str, ...]] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    # parameters
    "embed": ("fsdp",),
    "vocab": ("tensor",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "qkv": (),
    "norm": (),
    "conv_in": (),
    "patch": (),
    "layers": (),
    # KV cache
    "cache_batch": ("data", "fsdp"),
    "cache_seq": (),
    "cache_heads": ("tensor",),
}

LogicalAxes = Sequence[str | None]


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over (data, fsdp, tensor) with Auto axis types; one axis may be -1 to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {axis: int((shape or {}).get(axis, 1 if axis != "data" else -1)) for axis in MESH_AXES}
    unknown = set(shape or {}) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    fill = [axis for axis, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {fill}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {sizes}")
        sizes[fill[0]] = len(devices) // known
    total = math.prod(sizes.values())
    if total != len(devices):
        raise ValueError(f"mesh {sizes} needs {total} devices but {len(devices)} are available")
    grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(
    names: LogicalAxes,
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules: Mapping[str, tuple[str, ...]] = LOGICAL_RULES,
) -> PartitionSpec:
    """PartitionSpec for an array whose dims are named `names`.

    With `shape` and `mesh`, a dim whose size does not divide by its mesh axes falls back to fewer axes (or
    replication), so e.g. 2 KV heads on a tensor axis of 4 stay replicated instead of failing.
    """
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(names):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
        axes = [a for a in rules[name] if a not in used]
        if mesh is not None:
            axes = [a for a in axes if a in mesh.shape and mesh.shape[a] > 1]
            if shape is not None:
                while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
                    axes.pop()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, names: LogicalAxes, shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


def param(value: jax.Array, *names: str | None) -> nnx.Param:
    """An nnx.Param tagged with the logical names of its dims."""
    if len(names) != np.ndim(value):
        raise ValueError(f"{len(names)} logical names for an array of rank {np.ndim(value)}")
    return nnx.Param(value, logical_axes=tuple(names))


def variable_sharding(variable: nnx.Variable, mesh: Mesh) -> NamedSharding:
    """Where one variable lives over `mesh`: its logical axes (replicated where it has none)."""
    names = variable.get_metadata().get("logical_axes")
    shape = tuple(variable.get_value().shape)
    if names is None:
        names = (None,) * len(shape)
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A tree like `state` (nnx.State or a module's state) with a NamedSharding per variable."""
    return jax.tree.map(lambda v: variable_sharding(v, mesh), state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_module(module: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Place every variable of `module` on its logical sharding over `mesh` (in place); returns the module."""
    state = nnx.state(module)
    shardings = state_shardings(state, mesh)
    nnx.update(module, jax.device_put(state, shardings))
    return module


def constrain(x: jax.Array, names: LogicalAxes) -> jax.Array:
    """Constrain an activation to its logical sharding when a mesh is set (`jax.set_mesh`); a no-op otherwise."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    manual = {a for a, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Manual}
    if manual:  # inside shard_map (e.g. the rollout engine's per-shard decode): only the Auto axes can be named
        rules = {name: tuple(a for a in axes if a not in manual) for name, axes in LOGICAL_RULES.items()}
        return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh, rules))
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))
