"""What both Qwen-VL vision towers share, in Flax NNX: the Conv3d patch embedding, the axial 2-D rotary embedding,
the fused-qkv attention within segments, and the tower options (remat policy, layer scan).

Both towers take the host-prepared, bucket-padded `VisionInputs` of `vinci_jax.models.vision_inputs` built with their
own vision config; Qwen2.5-VL's blocks alternate window and full attention (`qwen2_5_vl/vision.py`), Qwen3-VL's all
attend within each image frame and feed DeepStack (`qwen3_vl/vision.py`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.attention import AttentionMask, attention, check_implementation
from vinci_jax.models.layers import Linear, apply_rope, check_remat_policy

# HF's init of the towers' linear layers (only matters for random initialisation)
INIT = nnx.initializers.lecun_normal()


class PatchProjection(nnx.Module):
    """HF's Conv3d with stride == kernel (bias per `use_bias`) as one matmul over each flattened (C, T, P, P) patch.

    The kernel [C, T, P, P, hidden] keeps the processor's flattening order of a patch (channel, time, row, column),
    so the convolution is `pixel_values @ kernel.reshape(-1, hidden)`.
    """

    def __init__(self, config: Any, *, use_bias: bool, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        shape = (config.in_channels, config.temporal_patch_size, config.patch_size, config.patch_size)
        kernel = INIT(rngs.params(), (int(np.prod(shape)), config.hidden_size), param_dtype)
        self.kernel = sharding.param(kernel.reshape(*shape, config.hidden_size), "conv_in", "patch", "patch", "patch",
                                     "embed")  # fmt: skip
        self.bias = sharding.param(jnp.zeros((config.hidden_size,), param_dtype), "embed") if use_bias else None
        self.dtype = dtype

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.dot(pixel_values.astype(self.dtype), kernel.reshape(-1, kernel.shape[-1]))
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class PatchEmbed(nnx.Module):
    def __init__(self, config: Any, *, use_bias: bool, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        self.proj = PatchProjection(config, use_bias=use_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        return self.proj(pixel_values)


def rotary_cos_sin(position_ids: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """HF's axial 2-D rope: head_dim/4 frequencies for rows, the same for columns, concatenated and repeated twice.

    position_ids: [..., 2] (row, column) of each patch; returns cos, sin of shape [..., head_dim] in float32.
    """
    spatial_dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, spatial_dim, 2, dtype=jnp.float32) / spatial_dim))
    freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [..., 2, head_dim/4]
    freqs = freqs.reshape(*freqs.shape[:-2], -1)  # [..., head_dim/2]: rows then columns
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class VisionAttention(nnx.Module):
    """Fused qkv projection, 2-D rope (float32), attention within segments."""

    def __init__(
        self, config: Any, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype, implementation: str = "auto"
    ):
        dim = config.hidden_size
        if dim % config.num_heads:
            raise ValueError(f"vision hidden_size {dim} is not divisible by num_heads {config.num_heads}")
        self.num_heads = config.num_heads
        self.head_dim = dim // config.num_heads
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=INIT)
        self.qkv = Linear(dim, 3 * dim, ("embed", "qkv"), **kw)
        self.proj = Linear(dim, dim, ("heads", "embed"), **kw)
        self.implementation = check_implementation(implementation)

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array,
        window_ids: jax.Array | None = None, use_full: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        """x: [R, L, hidden]; segment_ids: [G, S] with G * S == R * L: attention within consecutive groups of S
        patches (window slots or whole rows) and, inside a group, within equal ids (0 = padding).

        With `window_ids` (another such view) the traced bool `use_full` picks `segment_ids` or `window_ids` under a
        `lax.cond` (the layer scan's windowed and full blocks share one body)."""
        qkv = self.qkv(x).reshape(*x.shape[:2], 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rope(q, cos, sin, float32=True), apply_rope(k, cos, sin, float32=True)
        if window_ids is None:
            out = self._attend(q, k, v, segment_ids)
        else:

            def full(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
                return self._attend(q, k, v, segment_ids)

            def window(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
                return self._attend(q, k, v, window_ids)

            out = jax.lax.cond(use_full, full, window, q, k, v)
        return self.proj(out.reshape(x.shape))

    def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """Attention of q, k, v [R, L, heads, head_dim] within the groups of `segment_ids` [G, S]; same shape out."""
        groups, size = segment_ids.shape
        shape = q.shape
        q, k, v = (a.reshape(groups, size, self.num_heads, self.head_dim) for a in (q, k, v))
        q = sharding.constrain(q, ("batch", "seq", "act_heads", None))
        out = attention(q, k, v, AttentionMask.segments(segment_ids), implementation=self.implementation)
        return out.reshape(shape)


def call_block(block: nnx.Module, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array) -> jax.Array:
    return block(x, cos, sin, segment_ids)


class VisionTower(nnx.Module):
    """The options both towers keep (config, compute dtype, remat policy, layer scan); a tower's subclass builds
    its modules after `super().__init__`."""

    def __init__(self, config: Any, *, dtype: Any, remat_policy: str, scan_layers: bool):
        self.config = config
        self.dtype = dtype
        self.remat_policy = check_remat_policy(remat_policy)
        self.scan_layers = bool(scan_layers)
