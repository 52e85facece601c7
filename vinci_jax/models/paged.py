"""The decoders' paged decode step: one token per row, keys and values kept in a shared pool of fixed-size pages.

Both families (Qwen2.5-VL, Qwen3-VL) decode text the same way once the prompt is in the cache (DeepStack and image
splicing only touch image tokens, which never occur while decoding), so this one function drives either model's
layers; the model only supplies its rotary embedding (`model.rope_cos_sin`). The rollout engine
(`vinci_jax.sampling.engine`) owns the pool and the page tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vinci_jax.models.attention import paged_decode_attention


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PagedKV:
    """Per-layer key/value pages, each [kv_heads, num_pages, page_size, head_dim]."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @property
    def num_pages(self) -> int:
        return int(self.k[0].shape[1])

    @property
    def page_size(self) -> int:
        return int(self.k[0].shape[2])


def empty_pages(text: Any, num_pages: int, page_size: int, dtype: Any) -> PagedKV:
    """A zeroed pool for a text config (`num_hidden_layers`, `num_key_value_heads`, `head_dim`)."""
    shape = (text.num_key_value_heads, num_pages, page_size, text.head_dim)
    layers = range(text.num_hidden_layers)
    return PagedKV(k=tuple(jnp.zeros(shape, dtype) for _ in layers), v=tuple(jnp.zeros(shape, dtype) for _ in layers))


def write_token(pages: jax.Array, new: jax.Array, page: jax.Array, offset: jax.Array) -> jax.Array:
    """pages [KV, N, P, D] <- new [B, KV, D] at (page[b], offset[b])."""
    return pages.at[:, page, offset].set(new.astype(pages.dtype).transpose(1, 0, 2))


def decode_step(
    model: Any,
    tokens: jax.Array,
    positions: jax.Array,
    pages: PagedKV,
    page_table: jax.Array,
    lengths: jax.Array,
    write: jax.Array,
    *,
    implementation: str | None = None,
) -> tuple[jax.Array, PagedKV]:
    """Feed tokens [B] at rope positions [B] (all three mRoPE axes equal, as for generated text) and cache
    positions lengths [B]; returns (logits [B, vocab], pages with the new keys/values written).

    Rows with `write` False write into page 0, which the engine keeps as a sink no row ever reads as valid.
    `implementation` (default: the layer's attention setting) picks the paged attention kernel.
    """
    b = tokens.shape[0]
    size = pages.page_size
    page = jnp.where(write, jnp.take_along_axis(page_table, (lengths // size)[:, None], axis=1)[:, 0], 0)
    offset = lengths % size
    x = model.model.embed_tokens(tokens[:, None])
    cos, sin = model.rope_cos_sin(jnp.broadcast_to(positions[None, :, None], (3, b, 1)))
    new_k, new_v = [], []
    for layer, k_pages, v_pages in zip(model.model.layers, pages.k, pages.v, strict=True):
        attn = layer.self_attn
        q, k, v = attn.project(layer.input_layernorm(x), cos, sin)
        k_pages = write_token(k_pages, k[:, 0], page, offset)
        v_pages = write_token(v_pages, v[:, 0], page, offset)
        out = paged_decode_attention(
            q[:, 0], k_pages, v_pages, page_table, lengths + 1, implementation=implementation or attn.implementation
        )
        x = x + attn.o_proj(out.reshape(b, 1, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        new_k.append(k_pages)
        new_v.append(v_pages)
    logits = model.compute_logits(model.model.norm(x))[:, 0].astype(jnp.float32)
    return logits, PagedKV(k=tuple(new_k), v=tuple(new_v))
