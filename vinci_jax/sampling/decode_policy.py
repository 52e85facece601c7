"""The rollout engine's copy of the policy for decoding: weights and compute in `rollout.decode_dtype`, laid out
tensor-parallel (replicated over the data / fsdp axes) instead of the training state's FSDP layout.

Why: decoding reads every weight once per token for a few rows, so it is bound by weight bytes and by the FSDP
all-gathers a sharded layout needs at every step; a bf16, tensor-parallel copy halves the bytes and gathers once
per training step (when the copy is made), not once per decoded token.

`auto` is bfloat16 on TPU / GPU and float32 on CPU: XLA:CPU has no native bf16 matmul (it converts, which is slower
than float32 here), and the CPU tests and benchmarks compare tokens with the float32 lockstep sampler exactly. A
bf16 rollout's log-probs are the bf16 policy's; GRPO's truncated importance weights (`algo.tis_cap`) correct for the
gap between sampler and learner.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding

from vinci_jax.sharding import LOGICAL_RULES, logical_to_spec

DECODE_DTYPES = ("auto", "bfloat16", "float32")  # config.rollout.paged.decode_dtype

# decoding: weights split over the tensor axis only (the training rules also split "embed" over fsdp)
DECODE_RULES: dict[str, tuple[str, ...]] = {**LOGICAL_RULES, "embed": ()}


def resolve_decode_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """`auto` -> bfloat16 on accelerators, float32 on CPU; otherwise the named dtype."""
    if name not in DECODE_DTYPES:
        raise ValueError(f"decode_dtype={name!r}; choose one of {DECODE_DTYPES}")
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    return jnp.dtype(name)


def _decode_sharding(variable: nnx.Variable) -> Any:
    """The variable's sharding under DECODE_RULES on the mesh it lives on; None when it is not on a mesh."""
    value = variable.get_value()
    sharding = getattr(value, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return None
    names = variable.get_metadata().get("logical_axes") or (None,) * value.ndim
    return NamedSharding(sharding.mesh, logical_to_spec(names, value.shape, sharding.mesh, rules=DECODE_RULES))


def _param_dtype(model: nnx.Module) -> jnp.dtype:
    leaves = [x for x in jax.tree.leaves(nnx.state(model, nnx.Param)) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.dtype(leaves[0].dtype)


def decode_copy(model: nnx.Module, dtype: Any) -> nnx.Module:
    """`model` itself when its weights are already `dtype` (no copy, training layout kept), else a new module with
    floating weights cast to `dtype`, placed tensor-parallel, and every submodule's compute dtype set to `dtype`."""
    dtype = jnp.dtype(dtype)
    if _param_dtype(model) == dtype:
        return model
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def cast(variable: nnx.Variable) -> nnx.Variable:
        value, sharding = variable.get_value(), _decode_sharding(variable)
        value = value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value
        return variable.replace(value if sharding is None else jax.device_put(value, sharding))

    cast_params = jax.tree.map(cast, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    copy = nnx.merge(graphdef, cast_params, rest)
    for _, module in nnx.iter_modules(copy):
        current = getattr(module, "dtype", None)
        if current is not None and _is_float_dtype(current):
            module.dtype = dtype
    return copy


def _is_float_dtype(value: Any) -> bool:
    try:
        return jnp.issubdtype(jnp.dtype(value), jnp.floating)
    except TypeError:
        return False
