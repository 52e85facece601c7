"""The layers every model here is built from: Linear, norms, gated MLP, activations, rotary helpers, remat policies,
and the layer scan (`scan_layers`) every layer stack runs under when its model's `scan_layers` flag is on.

One implementation each, shared by Qwen2.5-VL, Qwen3-VL (text and vision) and DINOv2, so a numerical fix (dtype of a
norm's statistics, the rope's compute dtype) lands in every model at once. Kernels are [in, out]; norms keep their
weight in `scale`; every parameter carries its logical axis names (`sharding.param`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vinci_jax import sharding

Initializer = Callable[..., jax.Array]

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation of an HF config's `hidden_act` name (exact GELU for "gelu", as torch)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class Linear(nnx.Module):
    """y = x @ kernel (+ bias); kernel [in, out] tagged with logical axis names, computed in `dtype`.

    `init` only matters for random initialisation (checkpoints overwrite it): each model passes its HF init.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        names: tuple[str | None, str | None],
        *,
        use_bias: bool,
        rngs: nnx.Rngs,
        dtype: Any,
        param_dtype: Any,
        init: Initializer | None = None,
    ):
        init = init or nnx.initializers.normal(0.02)
        self.kernel = sharding.param(init(rngs.params(), (in_features, out_features), param_dtype), *names)
        self.bias = sharding.param(jnp.zeros((out_features,), param_dtype), names[1]) if use_bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """HF's Qwen RMSNorm: normalise in float32, cast back to the compute dtype, then scale."""

    def __init__(self, dim: int, eps: float, *, dtype: Any, param_dtype: Any):
        self.scale = sharding.param(jnp.ones((dim,), param_dtype), "norm")
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


class LayerNorm(nnx.Module):
    """torch.nn.LayerNorm: statistics and affine in float32 (exact for float32 inputs), result in `dtype`."""

    def __init__(self, dim: int, eps: float, *, dtype: Any, param_dtype: Any):
        self.scale = sharding.param(jnp.ones((dim,), param_dtype), "norm")
        self.bias = sharding.param(jnp.zeros((dim,), param_dtype), "norm")
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x)): the SwiGLU MLP of the Qwen decoders and of Qwen2.5-VL's vision blocks."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        hidden_act: str,
        *,
        use_bias: bool,
        rngs: nnx.Rngs,
        dtype: Any,
        param_dtype: Any,
        init: Initializer | None = None,
    ):
        kw = dict(use_bias=use_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=init)
        self.gate_proj = Linear(dim, hidden, ("embed", "mlp"), **kw)
        self.up_proj = Linear(dim, hidden, ("embed", "mlp"), **kw)
        self.down_proj = Linear(hidden, dim, ("mlp", "embed"), **kw)
        self.act = activation(hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = sharding.constrain(self.act(self.gate_proj(x)) * self.up_proj(x), ("batch", "seq", "act_mlp"))
        return self.down_proj(h)


# ---- rotary embeddings -----------------------------------------------------------------------------------------------


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, *, float32: bool = False) -> jax.Array:
    """x [..., heads, head_dim]; cos, sin [..., head_dim] (broadcast over heads).

    `float32=False` computes in x's dtype (HF's text models: cos/sin are cast to the compute dtype first);
    `float32=True` computes in float32 and casts back (HF's vision towers).
    """
    if float32:
        x32 = x.astype(jnp.float32)
        return (x32 * cos[..., None, :] + rotate_half(x32) * sin[..., None, :]).astype(x.dtype)
    return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


# ---- rematerialisation ---------------------------------------------------------------------------------------------

# What the backward pass may keep instead of recomputing, per block ("none": no remat at all).
REMAT_POLICIES: dict[str, Any] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat_policy(name: str) -> str:
    if name != "none" and name not in REMAT_POLICIES:
        raise ValueError(f"remat_policy {name!r} is not 'none' or one of {sorted(REMAT_POLICIES)}")
    return name


def remat(fn: Callable[..., Any], policy: str) -> Callable[..., Any]:
    """`fn` (its first argument an NNX module) under `nnx.remat` with the named policy; `fn` itself for "none"."""
    if check_remat_policy(policy) == "none":
        return fn
    return nnx.remat(fn, policy=REMAT_POLICIES[policy])


# ---- layer scan ------------------------------------------------------------------------------------------------------


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def stack_modules(modules: Sequence[nnx.Module]) -> tuple[Any, Any]:
    """(graphdef, state with a leading layer axis) of identically built modules.

    The models keep their layers as an `nnx.List` (checkpoint, HF and sharding paths stay `layers.<i>`), so the
    stack is a copy of the layer weights inside the traced program, constrained to the weights' own logical
    sharding with the layer axis replicated ("layers"); its backward unstacks the gradients again.
    """
    if not modules:
        raise ValueError("scan_layers needs at least one layer")
    graphdef, first = nnx.split(modules[0])
    states = [first]
    for i, module in enumerate(modules[1:], 1):
        other, state = nnx.split(module)
        if other != graphdef:
            raise ValueError(f"layer {i} is built differently from layer 0; a layer scan needs identical layers")
        states.append(state)

    def stack(*variables: nnx.Variable) -> nnx.Variable:
        value = jnp.stack([v.get_value() for v in variables])
        names = variables[0].get_metadata().get("logical_axes")
        if names is not None:
            value = sharding.constrain(value, ("layers", *names))
        return variables[0].replace(value)

    return graphdef, jax.tree.map(stack, *states, is_leaf=_is_variable)


LayerStep = Callable[[Callable[..., Any], Any, Any], tuple[Any, Any]]


def scan_layers(
    modules: Sequence[nnx.Module],
    layer_fn: Callable[..., Any],
    step: LayerStep,
    carry: Any,
    xs: Any = None,
    *,
    policy: str = "none",
) -> tuple[Any, Any]:
    """Run a layer stack as ONE `jax.lax.scan` body, so the program holds the layer once whatever the depth.

    For each layer i: `carry, y_i = step(apply, carry, xs[i])`, where `apply(*args)` is `layer_fn(layer_i, *args)`
    under the remat policy (`jax.checkpoint`, `prevent_cse=False` as a scan wants). What differs between layers is
    passed as per-layer `xs` (flags, slot indices) and handled in `step`, outside the remat: extras such as
    DeepStack's feature injection are not recomputed and do not change what the layer saves. Returns
    (final carry, stacked ys).
    """
    graphdef, stacked = stack_modules(modules)

    def call(state: Any, *args: Any) -> Any:
        return layer_fn(nnx.merge(graphdef, state), *args)

    if check_remat_policy(policy) != "none":
        call = jax.checkpoint(call, policy=REMAT_POLICIES[policy], prevent_cse=False)

    def body(c: Any, inputs: tuple[Any, Any]) -> tuple[Any, Any]:
        state, x = inputs
        return step(lambda *args: call(state, *args), c, x)

    return jax.lax.scan(body, carry, (stacked, xs))


def set_scan_layers(module: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch the layer scan of every layer stack in `module` (a model loaded or built elsewhere) on or off."""
    for _, sub in nnx.iter_modules(module):
        if hasattr(sub, "scan_layers"):
            sub.scan_layers = bool(enabled)
    return module
