"""Qwen3-VL vision tower in Flax NNX, numerically equal to transformers' `Qwen3VLVisionModel`.

Inputs are the shared, host-prepared `VisionInputs` of `vinci_jax.models.vision_inputs` built with this
family's vision config, whose `window_size` is one merged unit: the layout then keeps the image processor's patch
order, images packed into bucket-padded rows with one segment id per image frame. Every block attends within its
frame (full attention, no windows). Per-patch learned position embeddings are resampled from the square table to each
image's grid (bilinear, align_corners=True, as HF's `get_vision_interpolation_indices_and_weights`); the grid height
and width of each patch are recovered on device from the (row, column) position ids of its segment, so the inputs
need nothing beyond what Qwen2.5-VL's already carry.

DeepStack: after block `deepstack_visual_indexes[k]` the hidden states go through their own merger (LayerNorm over
the concatenated merge_size**2 patches); the text model adds those features at the image positions after its first
decoder layers. With `scan_layers` the blocks run as one `jax.lax.scan` body; the hidden states of the DeepStack
blocks are written into a carried buffer ([levels + 1, ...]: every other block writes the spare last slot) and go
through their mergers after the scan.

Parameter layout (NNX path relative to the tower -> HF tensor under `visual.`):

    patch_embed.proj.kernel [C, T, P, P, hidden] / .bias   <- patch_embed.proj.weight [hidden, C, T, P, P] / .bias
    pos_embed.embedding [num_position_embeddings, hidden]   <- pos_embed.weight
    blocks.{i}.norm{1,2}.scale / .bias                      <- blocks.{i}.norm{1,2}.weight / .bias
    blocks.{i}.attn.{qkv,proj}.kernel / .bias               <- blocks.{i}.attn.{qkv,proj}.weight / .bias (LINEAR)
    blocks.{i}.mlp.linear_fc{1,2}.kernel / .bias            <- blocks.{i}.mlp.linear_fc{1,2}.weight / .bias (LINEAR)
    merger.norm / linear_fc1 / linear_fc2                   <- merger.norm / linear_fc1 / linear_fc2
    deepstack_merger_list.{k}.*                             <- deepstack_merger_list.{k}.*
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.layers import LayerNorm, Linear, activation, remat, scan_layers
from vinci_jax.models.qwen3_vl.config import Qwen3VisionConfig
from vinci_jax.models.qwen_vl.vision import INIT, PatchEmbed, VisionAttention, VisionTower, call_block, rotary_cos_sin
from vinci_jax.models.vision_inputs import VisionInputs, global_reverse_index


class PositionEmbedding(nnx.Module):
    """The learned square table of position embeddings ([side * side, hidden])."""

    def __init__(self, config: Qwen3VisionConfig, *, rngs: nnx.Rngs, param_dtype: Any):
        init = nnx.initializers.normal(config.initializer_range)
        table = init(rngs.params(), (config.num_position_embeddings, config.hidden_size), param_dtype)
        self.embedding = sharding.param(table, None, "embed")


def _axis_taps(index: jax.Array, size: jax.Array, side: int) -> tuple[jax.Array, jax.Array]:
    """Bilinear taps (floor, floor + 1, clamped) and weights along one axis, align_corners=True, in float32."""
    src = index.astype(jnp.float32) * (side - 1) / jnp.maximum(size - 1, 1).astype(jnp.float32)
    floor = jnp.floor(src)
    offsets = jnp.arange(2, dtype=jnp.float32)
    taps = jnp.clip(floor[..., None].astype(jnp.int32) + jnp.arange(2), 0, side - 1)
    weights = jnp.maximum(1.0 - jnp.abs(src[..., None] - floor[..., None] - offsets), 0.0)
    return taps, weights


def interpolated_positions(table: jax.Array, position_ids: jax.Array, segment_ids: jax.Array, side: int) -> jax.Array:
    """Position embeddings [R, L, hidden] of every patch, bilinearly resampled to its image's grid.

    position_ids [R, L, 2] (row, column) and segment_ids [R, L] (one id per image frame within a row, 0 = padding):
    a frame's grid height / width is its largest row / column + 1 (every row and column of a frame holds patches).
    """
    rows, cols = position_ids[..., 0], position_ids[..., 1]
    num_rows, length = segment_ids.shape
    # a frame never spans rows, so (row, id) names it even where blocks of rows reuse ids (grouped inputs)
    flat_ids = (segment_ids + jnp.arange(num_rows, dtype=segment_ids.dtype)[:, None] * (length + 1)).reshape(-1)
    count = num_rows * (length + 1)
    height = jax.ops.segment_max(rows.reshape(-1), flat_ids, num_segments=count)[flat_ids].reshape(rows.shape) + 1
    width = jax.ops.segment_max(cols.reshape(-1), flat_ids, num_segments=count)[flat_ids].reshape(cols.shape) + 1
    h_taps, h_weights = _axis_taps(rows, height, side)
    w_taps, w_weights = _axis_taps(cols, width, side)
    index = (h_taps[..., :, None] * side + w_taps[..., None, :]).reshape(*rows.shape, 4)
    weight = (h_weights[..., :, None] * w_weights[..., None, :]).reshape(*rows.shape, 4)
    gathered = jnp.take(table, index, axis=0)  # [R, L, 4, hidden]
    return jnp.sum(gathered * weight[..., None].astype(gathered.dtype), axis=-2)


class VisionMLP(nnx.Module):
    def __init__(self, config: Qwen3VisionConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=INIT)
        self.linear_fc1 = Linear(config.hidden_size, config.intermediate_size, ("embed", "mlp"), **kw)
        self.linear_fc2 = Linear(config.intermediate_size, config.hidden_size, ("mlp", "embed"), **kw)
        self.act = activation(config.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = sharding.constrain(self.act(self.linear_fc1(x)), ("batch", "seq", "act_mlp"))
        return self.linear_fc2(h)


class VisionBlock(nnx.Module):
    def __init__(
        self, config: Qwen3VisionConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, attention: str = "auto"
    ):
        norm = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = LayerNorm(config.hidden_size, config.layer_norm_eps, **norm)
        self.norm2 = LayerNorm(config.hidden_size, config.layer_norm_eps, **norm)
        self.attn = VisionAttention(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, implementation=attention)
        self.mlp = VisionMLP(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array) -> jax.Array:
        x = sharding.constrain(x, ("batch", "seq", "act_embed"))
        x = x + self.attn(self.norm1(x), cos, sin, segment_ids)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """LayerNorm (per patch, or over the merged group when `postshuffle`), then MLP with exact GELU."""

    def __init__(self, config: Qwen3VisionConfig, *, postshuffle: bool, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        merged = config.hidden_size * config.spatial_merge_size**2
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=INIT)
        norm_dim = merged if postshuffle else config.hidden_size
        self.norm = LayerNorm(norm_dim, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.linear_fc1 = Linear(merged, merged, ("embed", "mlp"), **kw)
        self.linear_fc2 = Linear(merged, config.out_hidden_size, ("mlp", "embed"), **kw)
        self.merged = merged
        self.postshuffle = postshuffle

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm(x.reshape(-1, self.merged)) if self.postshuffle else self.norm(x).reshape(-1, self.merged)
        return self.linear_fc2(jax.nn.gelu(self.linear_fc1(h), approximate=False))


class Qwen3VisionTransformer(VisionTower):
    """Patches (bucket-padded `VisionInputs`) -> (merged features, DeepStack features), in image-token order.

    `__call__(inputs)` returns `(features [N, out_hidden], (deepstack_0 [N, out_hidden], ...))` with
    N = inputs.reverse_index.shape[0]: row j < inputs.num_merged_tokens is the j-th merged token of the concatenated
    images (HF's order); later rows are padding. DeepStack features are in block order (HF's list order).
    """

    def __init__(
        self, config: Qwen3VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
        remat_policy: str = "none", attention: str = "auto", scan_layers: bool = False,
    ):  # fmt: skip
        super().__init__(config, dtype=dtype, remat_policy=remat_policy, scan_layers=scan_layers)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.patch_embed = PatchEmbed(config, use_bias=True, **kw)
        self.pos_embed = PositionEmbedding(config, rngs=rngs, param_dtype=param_dtype)
        self.blocks = nnx.List([VisionBlock(config, attention=attention, **kw) for _ in range(config.depth)])
        self.merger = PatchMerger(config, postshuffle=False, **kw)
        self.deepstack_merger_list = nnx.List(
            [PatchMerger(config, postshuffle=True, **kw) for _ in config.deepstack_visual_indexes]
        )

    def __call__(self, inputs: VisionInputs) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        cfg = self.config
        rows, length = inputs.full_segment_ids.shape
        if tuple(inputs.pixel_values.shape[:2]) != (rows, length):
            raise ValueError(
                f"vision inputs disagree: pixel_values {inputs.pixel_values.shape} vs full_segment_ids "
                f"{inputs.full_segment_ids.shape}; build them with prepare_vision_inputs(..., qwen3 vision config)"
            )
        segments = jnp.asarray(inputs.full_segment_ids)
        positions = jnp.asarray(inputs.position_ids)
        x = self.patch_embed(jnp.asarray(inputs.pixel_values))
        pos = interpolated_positions(self.pos_embed.embedding[...], positions, segments, cfg.num_grid_per_side)
        x = x + pos.astype(x.dtype)
        cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        reverse = global_reverse_index(inputs, rows * length // cfg.spatial_merge_size**2)
        if self.scan_layers:
            x, taken = self._scanned_blocks(x, cos, sin, segments)
        else:
            taken = {}
            call = remat(call_block, self.remat_policy)
            for i, block in enumerate(self.blocks):
                x = call(block, x, cos, sin, segments)
                if i in cfg.deepstack_visual_indexes:
                    taken[i] = x
        deepstack = [
            jnp.take(self.deepstack_merger_list[cfg.deepstack_visual_indexes.index(i)](h), reverse, axis=0)
            for i, h in sorted(taken.items())
        ]  # fmt: skip
        return jnp.take(self.merger(x), reverse, axis=0), tuple(deepstack)

    def _scanned_blocks(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, segments: jax.Array
    ) -> tuple[jax.Array, dict[int, jax.Array]]:
        """(final hidden states, {DeepStack block: its hidden states}) from one scan body over the blocks."""
        taps = sorted(set(self.config.deepstack_visual_indexes))
        slot = np.full(len(self.blocks), len(taps), np.int32)  # the spare slot: blocks DeepStack does not read
        slot[taps] = np.arange(len(taps), dtype=np.int32)

        def step(apply: Any, carry: tuple[jax.Array, jax.Array], s: jax.Array) -> tuple[Any, None]:
            x, taken = carry
            x = apply(x, cos, sin, segments)
            return (x, jax.lax.dynamic_update_index_in_dim(taken, x, s, 0)), None

        buffer = jnp.zeros((len(taps) + 1, *x.shape), x.dtype)
        carry = (x, buffer)
        (x, buffer), _ = scan_layers(list(self.blocks), call_block, step, carry, jnp.asarray(slot),
                                     policy=self.remat_policy)  # fmt: skip
        return x, {block: buffer[k] for k, block in enumerate(taps)}
