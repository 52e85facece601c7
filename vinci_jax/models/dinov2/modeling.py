"""DINOv2 ViT in Flax NNX, numerically equal to HF's Dinov2Model / Dinov2WithRegistersModel.

Attribute paths mirror the tensor names HF writes to safetensors (`encoder.layer.3.attention.attention.query`,
`mlp.weights_in` for the fused SwiGLU input projection, ...), so the mapping in `vinci_jax/hf/dinov2.py` is a plain
table. Images come in NHWC (JAX's layout); `Dinov2Model.__call__` returns the final hidden states before and after
the last LayerNorm, which is what the reward's pre-/post-LN CLS choice needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.attention import AttentionMask, attention, check_implementation
from vinci_jax.models.dinov2.config import Dinov2Config
from vinci_jax.models.dinov2.interpolate import bicubic_matrix
from vinci_jax.models.layers import LayerNorm, activation, scan_layers
from vinci_jax.models.layers import Linear as _Linear

_init = nnx.initializers.truncated_normal(stddev=0.02)


def Linear(din: int, dout: int, names: tuple[str, str], *, bias: bool, rngs: nnx.Rngs, dtype, param_dtype) -> _Linear:
    """The shared Linear with DINOv2's truncated-normal init."""
    return _Linear(din, dout, names, use_bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype, init=_init)


class PatchEmbeddings(nnx.Module):
    """Non-overlapping patch conv written as reshape + matmul (kernel HWIO, as the CONV transform produces)."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype):
        p, c, d = config.patch_size, config.num_channels, config.hidden_size
        self.projection = nnx.Module()
        self.projection.kernel = sharding.param(
            _init(rngs.params(), (p, p, c, d), param_dtype), None, None, None, "embed"
        )
        self.projection.bias = sharding.param(jnp.zeros((d,), param_dtype), "embed")
        self.patch_size = p
        self.dtype = dtype

    def __call__(self, pixels: jax.Array) -> jax.Array:
        b, h, w, c = pixels.shape
        p = self.patch_size
        hp, wp = h // p, w // p
        x = pixels[:, : hp * p, : wp * p].astype(self.dtype).reshape(b, hp, p, wp, p, c)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp * wp, p * p * c)
        kernel = self.projection.kernel[...].astype(self.dtype).reshape(p * p * c, -1)
        return jnp.dot(x, kernel) + self.projection.bias[...].astype(self.dtype)


class Embeddings(nnx.Module):
    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype):
        d = config.hidden_size
        self.config = config
        self.dtype = dtype
        self.cls_token = sharding.param(_init(rngs.params(), (1, 1, d), param_dtype), None, None, "embed")
        if config.use_mask_token:  # unused at inference; kept so checkpoints load without leftovers
            self.mask_token = sharding.param(jnp.zeros((1, d), param_dtype), None, "embed")
        side = config.num_positions_side
        self.position_embeddings = sharding.param(
            _init(rngs.params(), (1, side * side + 1, d), param_dtype), None, None, "embed"
        )
        if config.num_register_tokens:
            self.register_tokens = sharding.param(
                jnp.zeros((1, config.num_register_tokens, d), param_dtype), None, None, "embed"
            )
        self.patch_embeddings = PatchEmbeddings(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def interpolated_positions(self, grid_h: int, grid_w: int) -> jax.Array:
        """[1, 1 + grid_h * grid_w, D] position embeddings resized (torch bicubic, in float32) to the patch grid."""
        pos = self.position_embeddings[...]
        side = self.config.num_positions_side
        if (grid_h, grid_w) == (side, side):
            return pos
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:].astype(jnp.float32).reshape(side, side, -1)
        rows = jnp.asarray(bicubic_matrix(side, grid_h, self.config.interpolate_antialias))
        cols = jnp.asarray(bicubic_matrix(side, grid_w, self.config.interpolate_antialias))
        resized = jnp.einsum("hi,ijd,wj->hwd", rows, patch_pos, cols)
        resized = resized.reshape(1, grid_h * grid_w, -1).astype(pos.dtype)
        return jnp.concatenate([cls_pos, resized], axis=1)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        b, h, w, _ = pixels.shape
        p = self.config.patch_size
        patches = self.patch_embeddings(pixels)
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, patches.shape[-1]))
        x = jnp.concatenate([cls, patches], axis=1)
        x = x + self.interpolated_positions(h // p, w // p).astype(self.dtype)
        if self.config.num_register_tokens:
            registers = jnp.broadcast_to(
                self.register_tokens[...].astype(self.dtype), (b, self.config.num_register_tokens, x.shape[-1])
            )
            x = jnp.concatenate([x[:, :1], registers, x[:, 1:]], axis=1)
        return x


class SelfAttention(nnx.Module):
    """HF's `attention.attention` (query/key/value projections)."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype):
        d = config.hidden_size
        kw = dict(bias=config.qkv_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.query = Linear(d, d, ("embed", "heads"), **kw)
        self.key = Linear(d, d, ("embed", "heads"), **kw)
        self.value = Linear(d, d, ("embed", "heads"), **kw)


class Attention(nnx.Module):
    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype, implementation: str = "auto"):
        self.attention = SelfAttention(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.output = nnx.Module()
        d = config.hidden_size
        self.output.dense = Linear(d, d, ("heads", "embed"), bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.implementation = check_implementation(implementation)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        sa = self.attention
        # one fused matmul for q, k, v (same numbers as three; fewer, larger matmuls on every backend)
        kernel = jnp.concatenate([sa.query.kernel[...], sa.key.kernel[...], sa.value.kernel[...]], axis=1)
        qkv = jnp.dot(x.astype(sa.query.dtype), kernel.astype(sa.query.dtype))
        if sa.query.bias is not None:
            bias = jnp.concatenate([sa.query.bias[...], sa.key.bias[...], sa.value.bias[...]])
            qkv = qkv + bias.astype(qkv.dtype)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = attention(q, k, v, AttentionMask(), implementation=self.implementation, scale=self.head_dim**-0.5)
        out = out.reshape(b, n, -1)
        return self.output.dense(out)


class LayerScale(nnx.Module):
    def __init__(self, config: Dinov2Config, *, param_dtype):
        self.lambda1 = sharding.param(jnp.full((config.hidden_size,), config.layerscale_value, param_dtype), "embed")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.lambda1[...].astype(x.dtype)


class MLP(nnx.Module):
    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype):
        kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = Linear(config.hidden_size, config.mlp_hidden, ("embed", "mlp"), **kw)
        self.fc2 = Linear(config.mlp_hidden, config.hidden_size, ("mlp", "embed"), **kw)
        self.act = activation(config.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nnx.Module):
    """SwiGLU with the fused input projection HF checkpoints store (`weights_in` = [gate; up])."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype):
        kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.weights_in = Linear(config.hidden_size, 2 * config.mlp_hidden, ("embed", "mlp"), **kw)
        self.weights_out = Linear(config.mlp_hidden, config.hidden_size, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(self.weights_in(x), 2, axis=-1)
        return self.weights_out(jax.nn.silu(gate) * up)


class Layer(nnx.Module):
    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype, attention: str = "auto"):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw)
        self.attention = Attention(config, rngs=rngs, implementation=attention, **kw)
        self.layer_scale1 = LayerScale(config, param_dtype=param_dtype)
        self.norm2 = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw)
        ffn = SwiGLUFFN if config.use_swiglu_ffn else MLP
        self.mlp = ffn(config, rngs=rngs, **kw)
        self.layer_scale2 = LayerScale(config, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        x = x + self.layer_scale2(self.mlp(self.norm2(x)))
        return sharding.constrain(x, ("batch", "seq", "act_embed"))


def _call_layer(layer: Layer, x: jax.Array) -> jax.Array:
    return layer(x)


def _scan_step(apply, x: jax.Array, _: None) -> tuple[jax.Array, None]:
    return apply(x), None


class Encoder(nnx.Module):
    """The layers, in a Python loop or (`scan_layers`) as one `jax.lax.scan` body over per-layer stored weights."""

    def __init__(
        self, config: Dinov2Config, *, rngs: nnx.Rngs, dtype, param_dtype, attention: str = "auto",
        scan_layers: bool = False,
    ):  # fmt: skip
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, attention=attention)
        self.layer = nnx.List([Layer(config, **kw) for _ in range(config.num_hidden_layers)])
        self.scan_layers = bool(scan_layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.scan_layers:
            return scan_layers(list(self.layer), _call_layer, _scan_step, x)[0]
        for layer in self.layer:
            x = layer(x)
        return x


class Dinov2Model(nnx.Module):
    """DINOv2 backbone. `__call__(pixels NHWC float) -> (pre_ln, post_ln)` hidden states [B, 1 + R + N, D].

    `attention` (auto | xla | splash | cudnn): unmasked attention over the 1 + R + N tokens; splash needs a token
    count that is a multiple of 128 and otherwise runs the xla path (a per-head loop on CPU). `scan_layers` runs
    the encoder layers as one scanned body (`models.layers.scan_layers`).
    """

    def __init__(
        self,
        config: Dinov2Config,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        scan_layers: bool = False,
    ):
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.embeddings = Embeddings(config, **kw)
        self.encoder = Encoder(config, attention=attention, scan_layers=scan_layers, **kw)
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        if pixels.ndim != 4 or pixels.shape[-1] != self.config.num_channels:
            raise ValueError(
                f"DINOv2 expects NHWC pixels with {self.config.num_channels} channels, got shape {pixels.shape}"
            )
        x = sharding.constrain(self.embeddings(pixels), ("batch", "seq", "act_embed"))
        hidden = self.encoder(x)
        return hidden, self.layernorm(hidden)

    def cls_features(self, pixels: jax.Array, post_layernorm: bool = False) -> jax.Array:
        """[B, D] CLS token of the last layer, before (HF `hidden_states[-1][:, 0]`) or after the final LayerNorm."""
        pre, post = self(pixels)
        return (post if post_layernorm else pre)[:, 0]


def random_model(config: Dinov2Config, seed: int = 0, dtype=jnp.float32) -> Dinov2Model:
    """A randomly initialised model (tests and benchmarks only; never a reward encoder)."""
    return Dinov2Model(config, rngs=nnx.Rngs(seed), dtype=dtype)
