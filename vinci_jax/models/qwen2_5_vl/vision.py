"""Qwen2.5-VL vision tower in Flax NNX, numerically equal to Hugging Face's `Qwen2_5_VisionTransformerPretrainedModel`.

The tower runs on arrays of static, bucketed shapes prepared on the host by `prepare_vision_inputs`
(`vision_inputs.py`): the images of a batch are laid out in HF's window order with one fixed-size slot per attention
window, packed into rows, padded up to buckets and described by segment ids. Window layers attend within slots
([num_slots, W] batched attention), full-attention layers within rows; the segment ids describe the masks to
`vinci_jax.models.attention` (no dense mask outside its xla path), and every image frame is its own segment. One
compiled program serves every image size that falls into the same bucket. Blocks run under the model's remat policy,
in a Python loop or (`scan_layers`) as one `jax.lax.scan` body whose per-block flag picks window or full attention
under a `lax.cond` around the attention kernel alone.

The patch embedding, rotary embedding and attention are the shared Qwen-VL ones (`vinci_jax.models.qwen_vl.vision`).

Parameter layout (NNX path relative to the tower -> HF tensor under `visual.`; the loader's table):

    patch_embed.proj.kernel   [C, T, P, P, hidden]  <- patch_embed.proj.weight [hidden, C, T, P, P]
                              to_nnx: np.moveaxis(w, 0, -1) ; to_hf: np.moveaxis(k, -1, 0)
                              (input dims keep the processor's flattening order of a patch: channel, time, row,
                              column, so the stride == kernel Conv3d is one matmul with kernel.reshape(-1, hidden))
    blocks.{i}.norm1.scale / norm2.scale               <- blocks.{i}.norm1.weight / norm2.weight      (identity)
    blocks.{i}.attn.qkv.kernel / .bias                 <- blocks.{i}.attn.qkv.weight / .bias          (LINEAR / id)
    blocks.{i}.attn.proj.kernel / .bias                <- blocks.{i}.attn.proj.weight / .bias         (LINEAR / id)
    blocks.{i}.mlp.{gate_proj,up_proj,down_proj}.kernel / .bias  <- same names .weight / .bias        (LINEAR / id)
    merger.ln_q.scale                                  <- merger.ln_q.weight                          (identity)
    merger.mlp_0.kernel / .bias                        <- merger.mlp.0.weight / .bias                 (LINEAR / id)
    merger.mlp_2.kernel / .bias                        <- merger.mlp.2.weight / .bias                 (LINEAR / id)

Linear kernels are [in, out] (the transpose of torch's [out, in]).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.attention import resolve
from vinci_jax.models.layers import GatedMLP, Linear, RMSNorm, remat, scan_layers
from vinci_jax.models.qwen2_5_vl.config import VisionConfig
from vinci_jax.models.qwen_vl.vision import INIT, PatchEmbed, VisionAttention, VisionTower, call_block, rotary_cos_sin
from vinci_jax.models.vision_inputs import VisionInputs, global_reverse_index, prepare_vision_inputs

__all__ = ["Qwen25VisionTransformer", "VisionConfig", "VisionInputs", "prepare_vision_inputs"]


class VisionBlock(nnx.Module):
    def __init__(
        self, config: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype,
        attention: str = "auto",
    ):  # fmt: skip
        eps = config.rms_norm_eps
        self.norm1 = RMSNorm(config.hidden_size, eps, dtype=dtype, param_dtype=param_dtype)
        self.norm2 = RMSNorm(config.hidden_size, eps, dtype=dtype, param_dtype=param_dtype)
        self.attn = VisionAttention(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, implementation=attention)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, use_bias=True,
                            rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=INIT)  # fmt: skip

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array,
        window_ids: jax.Array | None = None, use_full: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        x = sharding.constrain(x, ("batch", "seq", "act_embed"))
        x = x + self.attn(self.norm1(x), cos, sin, segment_ids, window_ids, use_full)
        return x + self.mlp(self.norm2(x))


def call_mixed_block(
    block: VisionBlock, x: jax.Array, cos: jax.Array, sin: jax.Array, full_ids: jax.Array, window_ids: jax.Array,
    use_full: jax.Array,
) -> jax.Array:  # fmt: skip
    return block(x, cos, sin, full_ids, window_ids, use_full)


def window_view(segment_ids: jax.Array, row_length: int, implementation: str) -> jax.Array:
    """The window layers' segment ids [G, S]: one window slot per group (S = W) for xla; for splash, consecutive
    slots of one row grouped into S = a multiple of 128 patches (window ids are unique within a row, so grouping
    slots changes nothing but the kernel's block shape). Falls back to S = W where no such S divides the row."""
    slots, slot = segment_ids.shape
    if resolve(implementation) != "splash" or slot % 128 == 0:
        return segment_ids
    size = next((m for m in range(slot, row_length + 1, slot) if m % 128 == 0 and row_length % m == 0), slot)
    return segment_ids.reshape(-1, size)


class PatchMerger(nnx.Module):
    """RMSNorm per patch, then each merge_size x merge_size group of patches -> MLP -> out_hidden_size."""

    def __init__(self, config: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype):
        merged = config.hidden_size * config.spatial_merge_size**2
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.ln_q = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.mlp_0 = Linear(merged, merged, ("embed", "mlp"), use_bias=True, init=INIT, **kw)
        self.mlp_2 = Linear(merged, config.out_hidden_size, ("mlp", "embed"), use_bias=True, init=INIT, **kw)
        self.merged = merged

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.ln_q(x).reshape(-1, self.merged)
        h = jax.nn.gelu(self.mlp_0(h), approximate=False)
        return self.mlp_2(h)


class Qwen25VisionTransformer(VisionTower):
    """Qwen2.5-VL vision tower: patches (window-slot layout, bucket-padded) -> merged image features in image order.

    `__call__(inputs)` returns [inputs.reverse_index.shape[0], out_hidden_size]: row j < inputs.num_merged_tokens is
    the j-th merged token of the concatenated images in HF order (what HF's tower returns); later rows are padding
    and must be ignored (the full model gathers only the rows it splices at image-token positions).
    """

    def __init__(
        self, config: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32, remat_policy: str = "none", attention: str = "auto",
        scan_layers: bool = False,
    ):  # fmt: skip
        bad = [i for i in config.fullatt_block_indexes if not 0 <= i < config.depth]
        if bad:
            raise ValueError(f"fullatt_block_indexes {bad} are outside 0..{config.depth - 1} (depth {config.depth})")
        super().__init__(config, dtype=dtype, remat_policy=remat_policy, scan_layers=scan_layers)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.patch_embed = PatchEmbed(config, use_bias=False, **kw)
        self.blocks = nnx.List([VisionBlock(config, attention=attention, **kw) for _ in range(config.depth)])
        self.merger = PatchMerger(config, **kw)
        self.full_attention_blocks = tuple(sorted(set(config.fullatt_block_indexes)))

    def __call__(self, inputs: VisionInputs) -> jax.Array:
        cfg = self.config
        rows, length = inputs.full_segment_ids.shape
        if tuple(inputs.pixel_values.shape[:2]) != (rows, length) or inputs.window_segment_ids.size != rows * length:
            raise ValueError(
                f"vision inputs disagree: pixel_values {inputs.pixel_values.shape}, full_segment_ids "
                f"{inputs.full_segment_ids.shape}, window_segment_ids {inputs.window_segment_ids.shape}; pass the "
                "pixel_values of prepare_vision_inputs (window-slot layout), not the image processor's"
            )
        x = self.patch_embed(jnp.asarray(inputs.pixel_values))
        head_dim = cfg.hidden_size // cfg.num_heads
        cos, sin = rotary_cos_sin(jnp.asarray(inputs.position_ids), head_dim, cfg.rope_theta)
        full_ids = jnp.asarray(inputs.full_segment_ids)
        window_ids = window_view(jnp.asarray(inputs.window_segment_ids), length, self.blocks[0].attn.implementation)
        if self.scan_layers:
            x = self._scanned_blocks(x, cos, sin, full_ids, window_ids)
        else:
            call = remat(call_block, self.remat_policy)
            for i, block in enumerate(self.blocks):
                x = call(block, x, cos, sin, full_ids if i in self.full_attention_blocks else window_ids)
        merged = self.merger(x)
        return jnp.take(merged, global_reverse_index(inputs, merged.shape[0]), axis=0)

    def _scanned_blocks(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, full_ids: jax.Array, window_ids: jax.Array
    ) -> jax.Array:
        """The blocks as one scan body: a per-block flag (scanned with the weights) picks full or window attention;
        a tower whose blocks are all of one kind needs no flag."""
        full = np.array([i in self.full_attention_blocks for i in range(len(self.blocks))])
        policy = self.remat_policy
        if full.all() or not full.any():
            ids = full_ids if full.all() else window_ids

            def uniform(apply: Any, x: jax.Array, _: None) -> tuple[jax.Array, None]:
                return apply(x, cos, sin, ids), None

            return scan_layers(list(self.blocks), call_block, uniform, x, policy=policy)[0]

        def mixed(apply: Any, x: jax.Array, use_full: jax.Array) -> tuple[jax.Array, None]:
            return apply(x, cos, sin, full_ids, window_ids, use_full), None

        return scan_layers(list(self.blocks), call_mixed_block, mixed, x, jnp.asarray(full), policy=policy)[0]
