"""The decoder both Qwen-VL families run, and their ForConditionalGeneration wrapper, in Flax NNX.

Module and attribute names mirror transformers' checkpoint names (`model.layers.{i}.self_attn.q_proj`,
`model.embed_tokens`, `lm_head`, `visual.*`), so the HF tables (`vinci_jax/hf/qwen2_5_vl.py`, `qwen3_vl.py`) are
short. Linear kernels are [in, out]; norms keep their weight in `scale`; the embedding table is `embedding`
[vocab, hidden].

Inputs are host-prepared and static-shaped: `input_ids` [B, L], 3-D `position_ids` [3, B, L] from the family's
`rope_index.get_rope_index`, and either `attention_mask` [B, L] (1 = real token) or `segment_ids` [B, L]
(0 = padding, > 0 = packed sample id). Attention is causal and never crosses segments. Image features (from the
vision tower, in the concatenated image order) replace the embeddings of `image_token_id` tokens in row-major order.

Decoding: `init_cache(batch, max_len)` gives an empty `KVCache`; `forward_with_cache` appends a chunk (a whole
prompt or one token per row) at each row's `cache.next_index`, attends over the valid cached slots, and returns the
logits and the updated cache. See `KVCache` for the slot rules.

Layer scan (`scan_layers=True`, `--config.model.scan_layers`): the full-sequence forward (SFT, the GRPO update) and
the fresh prefill run the decoder layers as one `jax.lax.scan` body under the remat policy (`layers.scan_layers`), so
compile time stays flat in depth; parameters stay stored per layer (`model.layers.<i>`). Chunks into a non-empty
cache (the T = 1 decode) keep the Python loop over layers: each layer's cache would have to be stacked and unstacked
on every step.

A family supplies: its attention options (`QwenTextModel.attention_class`, a `QwenAttention`), its
mRoPE slot layout (`QwenTextModel.mrope_axis_of_slot`), its vision tower (`QwenVLForConditionalGeneration.
vision_class`) and, for Qwen3-VL's DeepStack, what the tower hands the decoder besides the merged features
(`vision_features`) and how the decoder adds it after its layers (`QwenTextModel.injector`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.attention import AttentionMask, attention, check_implementation
from vinci_jax.models.layers import GatedMLP, Linear, RMSNorm, apply_rope, check_remat_policy, remat, scan_layers

BATCH_SEQ_EMBED = ("batch", "seq", "act_embed")


class Embed(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        init = nnx.initializers.normal(0.02)
        self.embedding = sharding.param(init(rngs.params(), (vocab, dim), param_dtype), "vocab", "embed")
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """x @ embedding.T: the tied output projection."""
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


# ---- multimodal rotary embedding ----------------------------------------------------------------------------------


def mrope_cos_sin(
    position_ids: jax.Array, config: Any, dtype: Any, axis_of_slot: np.ndarray
) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, L, head_dim] for 3-D positions [3, B, L] (float32 angles, cast to `dtype` as HF does).

    Frequency slot j of the first half takes its position from axis `axis_of_slot[j]` (0 = t, 1 = h, 2 = w: the
    family's layout of `mrope_section`); the second half repeats the first, as in HF.
    """
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    positions = jnp.asarray(position_ids).astype(jnp.float32)[axis_of_slot]  # [dim/2, B, L]
    angles = jnp.moveaxis(positions, 0, -1) * jnp.asarray(inv_freq)  # [B, L, dim/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


# ---- KV cache --------------------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per-layer keys/values for decoding, with per-row write positions.

    k, v:        tuple over layers of [B, max_len, kv_heads, head_dim]
    valid:       bool [B, max_len]: slot holds a real token (written with attention_mask 1)
    next_index:  int32 [B]: slot where the next chunk of this row is written

    A chunk of T tokens for row b goes to slots next_index[b] .. next_index[b] + T - 1; afterwards next_index[b]
    points just past the chunk's last *real* token, so right-padding is overwritten by the next chunk and
    left-padding stays behind as invalid slots. A query in slot s attends to valid slots <= s. The caller must keep
    next_index + T <= max_len (jax clamps out-of-range writes silently).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    valid: jax.Array
    next_index: jax.Array

    @property
    def max_len(self) -> int:
        return int(self.valid.shape[1])


CACHE_AXES = ("cache_batch", "cache_seq", "cache_heads", None)


def _write_rows(buffer: jax.Array, chunk: jax.Array, start: jax.Array) -> jax.Array:
    """buffer [B, S, ...] <- chunk [B, T, ...] at per-row offsets start [B]."""

    def one(buf, new, s):
        return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), (s,) + (0,) * (buf.ndim - 1))

    return jax.vmap(one)(buffer, chunk, start)


def empty_cache(text: Any, batch: int, max_len: int, dtype: Any) -> KVCache:
    """An empty cache (all slots invalid, next_index 0) for a text config, sharded by the cache logical axes."""
    shape = (batch, max_len, text.num_key_value_heads, text.head_dim)

    def zeros() -> jax.Array:
        return sharding.constrain(jnp.zeros(shape, dtype), CACHE_AXES)

    layers = range(text.num_hidden_layers)
    return KVCache(
        k=tuple(zeros() for _ in layers),
        v=tuple(zeros() for _ in layers),
        valid=jnp.zeros((batch, max_len), jnp.bool_),
        next_index=jnp.zeros((batch,), jnp.int32),
    )


def chunk_attention(
    cache: KVCache, attention_mask: jax.Array | None, batch: int, length: int
) -> tuple[jax.Array, jax.Array, jax.Array, AttentionMask]:
    """For a chunk [B, T] appended to `cache`: (real tokens [B, T], write start [B], updated valid [B, S], the
    mask: a query in slot s sees valid slots <= s; a padding query sees the invalid slots <= s, its own included)."""
    real = jnp.ones((batch, length), jnp.bool_) if attention_mask is None else jnp.asarray(attention_mask) != 0
    start = cache.next_index
    valid = _write_rows(cache.valid, real, start)
    slots = (start[:, None] + jnp.arange(length)[None, :]).astype(jnp.int32)  # [B, T] slot of each query
    keys = jnp.broadcast_to(jnp.arange(cache.max_len, dtype=jnp.int32), (batch, cache.max_len))
    mask = AttentionMask(
        q_segment_ids=real.astype(jnp.int32),
        kv_segment_ids=valid.astype(jnp.int32),
        q_positions=slots,
        kv_positions=keys,
        causal=True,
    )
    return real, start, valid, mask


def chunk_mask(
    cache: KVCache, attention_mask: jax.Array | None, batch: int, length: int, fresh: bool
) -> tuple[jax.Array, jax.Array, jax.Array, AttentionMask]:
    """`chunk_attention`, or for the first chunk into an empty cache (`fresh`: every row starts at slot 0) the plain
    causal mask over the chunk's own keys, which every kernel (splash, cuDNN) expresses: no [T, max_len] mask."""
    real, start, valid, mask = chunk_attention(cache, attention_mask, batch, length)
    if fresh:
        mask = AttentionMask.for_tokens(real.astype(jnp.int32), shape=(batch, length))
    return real, start, valid, mask


def next_write_index(start: jax.Array, real: jax.Array) -> jax.Array:
    """Just past each row's last real token: right padding is overwritten by the next chunk."""
    last_real = jnp.max(jnp.where(real, jnp.arange(real.shape[1])[None, :] + 1, 0), axis=1)
    return (start + last_real).astype(jnp.int32)


# ---- decoder ---------------------------------------------------------------------------------------------------------


class QwenAttention(nnx.Module):
    """Grouped-query attention with mRoPE, optional biases and optional per-head q/k RMSNorm before the rotary
    embedding; `models.attention` does the softmax (`implementation`). A family's subclass fixes the options
    (Qwen2: qkv bias; Qwen3: q/k norm, biases per `attention_bias`)."""

    def __init__(
        self, config: Any, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, implementation: str = "auto",
        qkv_bias: bool, o_bias: bool, qk_norm: bool,
    ):  # fmt: skip
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Linear(d, self.num_heads * hd, ("embed", "heads"), use_bias=qkv_bias, **kw)
        self.k_proj = Linear(d, self.num_kv_heads * hd, ("embed", "kv_heads"), use_bias=qkv_bias, **kw)
        self.v_proj = Linear(d, self.num_kv_heads * hd, ("embed", "kv_heads"), use_bias=qkv_bias, **kw)
        self.o_proj = Linear(self.num_heads * hd, d, ("heads", "embed"), use_bias=o_bias, **kw)
        norm = dict(dtype=dtype, param_dtype=param_dtype)
        self.q_norm = RMSNorm(hd, config.rms_norm_eps, **norm) if qk_norm else None
        self.k_norm = RMSNorm(hd, config.rms_norm_eps, **norm) if qk_norm else None
        self.implementation = check_implementation(implementation)

    def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k, v [B, T, heads, head_dim] (rotary on q and k), constrained to the head sharding."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        heads = ("batch", "seq", "act_heads", None)
        q = sharding.constrain(apply_rope(q, cos, sin), heads)
        k = sharding.constrain(apply_rope(k, cos, sin), heads)
        return q, k, sharding.constrain(v, heads)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
        """o_proj(attention over heads), [B, T, hidden]."""
        b, t, h, d = q.shape
        return self.o_proj(attention(q, k, v, mask, implementation=self.implementation).reshape(b, t, h * d))

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask) -> jax.Array:
        return self.attend(*self.project(x, cos, sin), mask)


def text_mlp(config: Any, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> GatedMLP:
    """The decoders' SwiGLU MLP (no biases)."""
    return GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, use_bias=False, rngs=rngs,
                    dtype=dtype, param_dtype=param_dtype)  # fmt: skip


class DecoderLayer(nnx.Module):
    """Pre-norm attention + SwiGLU MLP; `attention_class` is the family's `QwenAttention`."""

    def __init__(
        self, config: Any, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, attention: str = "auto",
        attention_class: type,
    ):  # fmt: skip
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.self_attn = attention_class(config, rngs=rngs, implementation=attention, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.mlp = text_mlp(config, rngs=rngs, **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask) -> jax.Array:
        return self.prefill(x, cos, sin, mask)[0]

    def _finish(self, x: jax.Array, q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
        x = x + self.self_attn.attend(q, k, v, mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return sharding.constrain(x, BATCH_SEQ_EMBED)

    def prefill(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The layer over a chunk that attends only to its own keys; also returns those keys and values [B, T, kv,
        head_dim] (a fresh prefill writes them into the cache)."""
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        return self._finish(x, q, k, v, mask), k, v

    def cached(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask, k_cache: jax.Array,
        v_cache: jax.Array, start: jax.Array, fresh: bool = False,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
        """Append this chunk's keys/values to the caches and attend over them (`fresh`: over the chunk's own)."""
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        k_cache = sharding.constrain(_write_rows(k_cache, k, start), CACHE_AXES)
        v_cache = sharding.constrain(_write_rows(v_cache, v, start), CACHE_AXES)
        keys, values = (k, v) if fresh else (k_cache.astype(q.dtype), v_cache.astype(q.dtype))
        return self._finish(x, q, keys, values, mask), k_cache, v_cache


def call_layer(layer: DecoderLayer, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask) -> jax.Array:
    return layer(x, cos, sin, mask)


def prefill_layer(
    layer: DecoderLayer, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask
) -> tuple[jax.Array, jax.Array, jax.Array]:
    return layer.prefill(x, cos, sin, mask)


# (layer index, hidden states) -> hidden states, after each layer: Qwen3-VL's DeepStack. The index is a Python int in
# the layer loop and a traced int32 under the layer scan.
Inject = Callable[[Any, jax.Array], jax.Array]


def _layer_indices(layers: Any) -> jax.Array:
    return jnp.arange(len(layers), dtype=jnp.int32)


def decoder_layers(
    layers: Any, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask, *, remat_policy: str,
    scan: bool, inject: Inject | None = None,
) -> jax.Array:  # fmt: skip
    """The full-sequence pass through the decoder layers, each under the remat policy: a Python loop, or with `scan`
    one `jax.lax.scan` body (`layers.scan_layers`); `inject(i, x)` runs after layer i, outside the remat."""
    if not scan:
        call = remat(call_layer, remat_policy)
        for i, layer in enumerate(layers):
            x = call(layer, x, cos, sin, mask)
            if inject is not None:
                x = inject(i, x)
        return x

    def step(apply: Callable[..., jax.Array], x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        x = apply(x, cos, sin, mask)
        return (x if inject is None else inject(i, x)), None

    x, _ = scan_layers(list(layers), call_layer, step, x, _layer_indices(layers), policy=remat_policy)
    return x


def cached_layers(
    layers: Any, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask, cache: KVCache,
    start: jax.Array, *, fresh: bool, scan: bool, inject: Inject | None = None,
) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]]:  # fmt: skip
    """A chunk through the decoder layers, writing its keys/values into the cache at `start`: (x, new k, new v).

    With `scan` and a `fresh` cache the layers run as one scan body that emits every layer's keys and values
    ([layers, B, T, ...], one extra copy of the prompt's keys/values until they are written into the per-layer
    caches); any other chunk (the T = 1 decode) runs the Python loop, which updates each layer's cache in place.
    """
    if scan and fresh:

        def step(apply: Callable[..., Any], x: jax.Array, i: jax.Array) -> tuple[jax.Array, Any]:
            x, k, v = apply(x, cos, sin, mask)
            return (x if inject is None else inject(i, x)), (k, v)

        x, (ks, vs) = scan_layers(list(layers), prefill_layer, step, x, _layer_indices(layers))

        def write(caches: tuple[jax.Array, ...], chunks: jax.Array) -> tuple[jax.Array, ...]:
            return tuple(sharding.constrain(_write_rows(c, chunks[i], start), CACHE_AXES) for i, c in enumerate(caches))

        return x, write(cache.k, ks), write(cache.v, vs)
    new_k, new_v = [], []
    for i, (layer, k_cache, v_cache) in enumerate(zip(layers, cache.k, cache.v, strict=True)):
        x, k_cache, v_cache = layer.cached(x, cos, sin, mask, k_cache, v_cache, start, fresh)
        if inject is not None:
            x = inject(i, x)
        new_k.append(k_cache)
        new_v.append(v_cache)
    return x, tuple(new_k), tuple(new_v)


class QwenTextModel(nnx.Module):
    """Token embedding, decoder layers, final norm (HF's `model.language_model`, saved as `model.*`).

    A family sets `attention_class` and `mrope_axis_of_slot`, and overrides `injector` when the decoder adds
    something after its layers (Qwen3-VL's DeepStack)."""

    attention_class: ClassVar[type]

    def __init__(
        self, config: Any, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, remat_policy: str = "none",
        attention: str = "auto", scan_layers: bool = False,
    ):  # fmt: skip
        self.config = config
        self.remat_policy = check_remat_policy(remat_policy)
        self.scan_layers = bool(scan_layers)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = Embed(config.vocab_size, config.hidden_size, rngs=rngs, **kw)
        self.layers = nnx.List([
            DecoderLayer(config, rngs=rngs, attention=attention, attention_class=self.attention_class, **kw)
            for _ in range(config.num_hidden_layers)
        ])  # fmt: skip
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.dtype = dtype

    def mrope_axis_of_slot(self) -> np.ndarray:
        """Position axis (0 = t, 1 = h, 2 = w) of each of the head_dim/2 rotary frequency slots: the one layout
        the families differ in (Qwen2.5-VL: contiguous t/h/w sections; Qwen3-VL: interleaved), so each family's
        text model defines it and this shared class has none."""
        raise NotImplementedError(f"{type(self).__name__} must define its mRoPE slot layout (mrope_axis_of_slot)")

    def rope_cos_sin(self, position_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The rotary cos, sin [B, L, head_dim] for 3-D positions [3, B, L]."""
        return mrope_cos_sin(position_ids, self.config, self.dtype, self.mrope_axis_of_slot())

    def injector(self, extra: Any, scanned: bool) -> Inject | None:
        """What runs after each layer, given the wrapper's `vision_features` extra (None: nothing)."""
        del extra, scanned
        return None

    def __call__(self, embeds: jax.Array, position_ids: jax.Array, mask: AttentionMask, extra: Any = None) -> jax.Array:
        cos, sin = self.rope_cos_sin(position_ids)
        x = sharding.constrain(embeds, BATCH_SEQ_EMBED)
        x = decoder_layers(self.layers, x, cos, sin, mask, remat_policy=self.remat_policy, scan=self.scan_layers,
                           inject=self.injector(extra, self.scan_layers))  # fmt: skip
        return self.norm(x)


# ---- full model ------------------------------------------------------------------------------------------------------


def image_feature_rows(
    input_ids: jax.Array, image_token_id: int, num_features: int, groups: int = 1
) -> tuple[jax.Array, jax.Array]:
    """(is_image [B*L] bool, feature row of each token [B*L]): image tokens, row-major over [B, L], take
    consecutive feature rows. With `groups` G > 1 the batch rows form G equal blocks and `features` G equal blocks
    (see `VisionInputs.groups`); block g's image tokens read block g's rows.
    """
    b = input_ids.shape[0]
    if b % groups:
        raise ValueError(f"{b} batch rows do not split into {groups} vision groups")
    per_group = num_features // groups
    is_image = (input_ids == image_token_id).reshape(groups, -1)
    row = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, per_group - 1)
    row = row + jnp.arange(groups, dtype=row.dtype)[:, None] * per_group
    return is_image.reshape(-1), row.reshape(-1)


def splice_image_features(
    embeds: jax.Array, input_ids: jax.Array, features: jax.Array, image_token_id: int, groups: int = 1
) -> jax.Array:
    """Replace the embeddings of image tokens (row-major over [B, L]) by consecutive rows of `features`.

    `features` may have padding rows at the end (of each group; bucketed vision tower); they are never read as
    long as the number of image tokens does not exceed the number of real feature rows (which the processor
    guarantees).
    """
    b, length, d = embeds.shape
    is_image, row = image_feature_rows(input_ids, image_token_id, features.shape[0], groups)
    gathered = jnp.take(features.astype(embeds.dtype), row, axis=0)
    flat = jnp.where(is_image[:, None], gathered, embeds.reshape(-1, d))
    return flat.reshape(b, length, d)


class QwenVLForConditionalGeneration(nnx.Module):
    """Vision tower + decoder + LM head: what both families' ForConditionalGeneration classes are.

    model(input_ids, position_ids, attention_mask=None, segment_ids=None, pixel_values=None, vision_inputs=None)
    -> logits [B, L, vocab] in `dtype`. `vision_inputs` comes from the family's `prepare_vision_inputs`
    (`vinci_jax.models.vision_inputs`) built with `config.vision`; its `pixel_values` is used unless
    `pixel_values` is given separately, e.g. to place it on its own sharding.

    `remat_policy` ("none", "full", "dots", "dots_no_batch") wraps each decoder layer and vision block in
    `nnx.remat` with that `jax.checkpoint_policies` policy; `model.model.remat_policy` / `model.visual.remat_policy`
    may also be set after loading. `attention` (auto | xla | splash | cudnn) picks the attention kernels of the
    decoder and the vision tower (`vinci_jax.models.attention`; `set_implementation` changes it after loading).
    `scan_layers` runs the decoder layers and the vision blocks as one scanned body each (`layers.set_scan_layers`
    changes it after loading). A family sets `vision_class` and `text_class`.
    """

    vision_class: ClassVar[type]
    text_class: ClassVar[type[QwenTextModel]]

    def __init__(
        self, config: Any, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
        remat_policy: str = "none", attention: str = "auto", scan_layers: bool = False,
    ):  # fmt: skip
        self.config = config
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy, attention=attention,
                  scan_layers=scan_layers)  # fmt: skip
        self.visual = self.vision_class(config.vision, rngs=rngs, **kw)
        self.model = self.text_class(config.text, rngs=rngs, **kw)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        text = config.text
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(text.hidden_size, text.vocab_size, ("embed", "vocab"), use_bias=False, rngs=rngs, **kw)
        )

    # -- pieces --
    def vision_features(self, input_ids: jax.Array, vision_inputs: Any) -> tuple[jax.Array, Any]:
        """(merged image features in image order, what the decoder takes besides them: nothing here)."""
        del input_ids
        return self.visual(vision_inputs), None

    def embed_with_vision(
        self, input_ids: jax.Array, pixel_values: jax.Array | None = None, vision_inputs: Any = None
    ) -> tuple[jax.Array, Any]:
        """Token embeddings with image features spliced in at `image_token_id` positions, and the extra the
        decoder takes (`vision_features`; None without images)."""
        embeds = self.model.embed_tokens(input_ids)
        if vision_inputs is None:
            if pixel_values is not None:
                raise ValueError("pixel_values needs vision_inputs (from prepare_vision_inputs with config.vision)")
            return embeds, None
        if pixel_values is not None:
            vision_inputs = dataclasses.replace(vision_inputs, pixel_values=pixel_values)
        features, extra = self.vision_features(input_ids, vision_inputs)
        groups = vision_inputs.groups
        return splice_image_features(embeds, input_ids, features, self.config.image_token_id, groups), extra

    def embed(
        self, input_ids: jax.Array, pixel_values: jax.Array | None = None, vision_inputs: Any = None
    ) -> jax.Array:
        """Token embeddings with image features spliced in (DeepStack features are added later, in the decoder)."""
        return self.embed_with_vision(input_ids, pixel_values, vision_inputs)[0]

    def compute_logits(self, hidden: jax.Array) -> jax.Array:
        """Final hidden states [..., hidden] -> logits [..., vocab] (tied or untied head)."""
        hidden = sharding.constrain(hidden, BATCH_SEQ_EMBED)
        logits = self.model.embed_tokens.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return sharding.constrain(logits, ("batch", "seq", "act_vocab"))

    def hidden_states(
        self, input_ids: jax.Array, position_ids: jax.Array, attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None, pixel_values: jax.Array | None = None, vision_inputs: Any = None,
    ) -> jax.Array:  # fmt: skip
        """Final (normed) hidden states [B, L, hidden]."""
        mask = AttentionMask.for_tokens(attention_mask, segment_ids, shape=input_ids.shape)
        embeds, extra = self.embed_with_vision(input_ids, pixel_values, vision_inputs)
        return self.model(embeds, position_ids, mask, extra)

    def __call__(
        self, input_ids: jax.Array, position_ids: jax.Array, attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None, pixel_values: jax.Array | None = None, vision_inputs: Any = None,
    ) -> jax.Array:  # fmt: skip
        hidden = self.hidden_states(input_ids, position_ids, attention_mask, segment_ids, pixel_values, vision_inputs)
        return self.compute_logits(hidden)

    # -- decoding --
    def rope_cos_sin(self, position_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The decoder's rotary cos, sin [B, L, head_dim] for 3-D positions (the paged decode step uses it)."""
        return self.model.rope_cos_sin(position_ids)

    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        """An empty cache (all slots invalid, next_index 0), sharded by the cache logical axes under a mesh."""
        return empty_cache(self.config.text, batch, max_len, dtype or self.dtype)

    def forward_with_cache(
        self, input_ids: jax.Array, position_ids: jax.Array, cache: KVCache, attention_mask: jax.Array | None = None,
        pixel_values: jax.Array | None = None, vision_inputs: Any = None, fresh: bool = False, last_only: bool = False,
    ) -> tuple[jax.Array, KVCache]:  # fmt: skip
        """Append a chunk [B, T] to the cache and return (logits [B, T, vocab], updated cache).

        Use it for the prefill (T = prompt length, with images) and for decoding (T = 1). `attention_mask` [B, T]
        marks real tokens of the chunk (default: all real). Positions are the caller's (`rope_index`). `fresh=True`
        promises an empty cache (`init_cache`): the prefill then attends over its own keys with a causal
        description the fused kernels take, instead of a [T, max_len] mask over the cache. `last_only=True` returns
        logits [B, 1, vocab] of the last column only (what a prefill samples from).
        """
        real, start, valid, mask = chunk_mask(cache, attention_mask, *input_ids.shape, fresh)

        x, extra = self.embed_with_vision(input_ids, pixel_values, vision_inputs)
        cos, sin = self.model.rope_cos_sin(position_ids)
        x = sharding.constrain(x, BATCH_SEQ_EMBED)
        scanned = self.model.scan_layers and fresh  # the layer scan only serves a fresh prefill (cached_layers)
        x, new_k, new_v = cached_layers(
            self.model.layers, x, cos, sin, mask, cache, start, fresh=fresh, scan=self.model.scan_layers,
            inject=self.model.injector(extra, scanned),
        )  # fmt: skip
        if last_only:  # a prefill samples from the last position only: no [B, T, vocab] logits
            x = x[:, -1:]
        logits = self.compute_logits(self.model.norm(x))

        next_index = next_write_index(start, real)
        return logits, KVCache(k=new_k, v=new_v, valid=valid, next_index=next_index)
