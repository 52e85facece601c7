"""The rollout engine's decode step over a data-parallel mesh, and its abstract inputs (for `vinci_jax.aot`).

Why: a pod's page pool is far larger than one chip's memory, and a gather from a pool split over chips would
all-gather it. So each data-parallel shard (one device of the (data, fsdp) axes) owns its own slots and its own
pages: the step is `decode_burst` under `shard_map`, every row-indexed input split over the shards, the page
table holding shard-local page ids, and the decode copy of the weights replicated on every shard. Nothing
crosses chips during a burst. (The step is manual over every mesh axis, since the TPU paged-attention kernel
cannot be partitioned automatically: a tensor axis > 1 only repeats each shard's work.)

`decode_burst_inputs` builds ShapeDtypeStructs for one such step, so the AOT tool compiles exactly this function
for a slice (`vinci_jax.aot.programs`). The engine's prefill of a group of prompts into pages (`prefill_pages`)
runs the same way (`sharded_prefill_pages`, `prefill_pages_inputs`): each shard prefills its own group into its
own pages, its images in its own vision block. The host scheduler (`engine._Run`) drives one shard today: a multi-shard
run would keep one page allocator per shard.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vinci_jax.models.paged import PagedKV
from vinci_jax.sampling.decode_policy import DECODE_RULES
from vinci_jax.sampling.pages import pages_for_tokens
from vinci_jax.sharding import logical_to_spec

SHARD_AXES = ("data", "fsdp")  # the data-parallel axes the engine splits its slots and pages over


def shard_count(mesh: Mesh) -> int:
    return int(mesh.shape["data"]) * int(mesh.shape["fsdp"])


def sharded_decode_burst(mesh: Mesh, graphdef: Any, *, steps: int, greedy: bool, top_k: int, use_top_p: bool) -> Any:
    """A jitted `decode_burst` in which every shard decodes its own slots over its own pages.

    Per-shard inputs are concatenated over shards on their leading dim (pages on their page dim): slot_logits
    [shards * (local slots + 1), V], slot ids / rows / lengths ... [shards * bucket], page_table [shards * bucket,
    W] (local page ids), exit_at [shards]; prompts' logits, row keys and scalars are replicated."""
    from vinci_jax.sampling.engine import decode_burst

    rows, rep = PartitionSpec(SHARD_AXES), PartitionSpec()
    pool = PartitionSpec(None, SHARD_AXES)

    def local(state, pages, slot_logits, prefill_logits, slot_ids, fresh, prompt, page_table, lengths, positions,
              done_steps, limit, active, row_ids, row_keys, temperature, top_p, stop_ids, pad_id, exit_at):  # fmt: skip
        out = decode_burst(
            graphdef, state, pages, slot_logits, prefill_logits, slot_ids, fresh, prompt, page_table, lengths,
            positions, done_steps, limit, active, row_ids, row_keys, temperature, top_p, stop_ids, pad_id,
            exit_at[0], steps=steps, greedy=greedy, top_k=top_k, use_top_p=use_top_p,
        )  # fmt: skip
        return (*out[:-1], out[-1][None])

    def run(state, pages, *rest):
        pages_spec = jax.tree.map(lambda _: pool, pages)
        state_spec = jax.tree.map(lambda _: rep, state)
        in_specs = (state_spec, pages_spec, rows, rep, rows, rows, rows, rows, rows, rows, rows, rows, rows, rows,
                    rep, rep, rep, rep, rep, rows)  # fmt: skip
        out_specs = (pages_spec, rows, rows, rows, rows, rows, rows)
        # manual over every axis: the TPU paged-attention kernel (Mosaic) cannot be partitioned automatically, so
        # a tensor axis > 1 would hold replicas that compute the same rows (use tensor = 1 for the engine's mesh)
        body = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             axis_names=set(mesh.axis_names), check_vma=False)  # fmt: skip
        return body(state, pages, *rest)

    return jax.jit(run, donate_argnums=(1, 2))


def decode_burst_inputs(
    mesh: Mesh, abstract_state: Any, text: Any, *, slots_per_shard: int, pages_per_shard: int,
    page_size: int, width: int, prompts: int, rows: int, dtype: Any = jnp.bfloat16,
) -> tuple[Any, ...]:  # fmt: skip
    """Abstract arguments of `sharded_decode_burst(...)` for a full bucket of `slots_per_shard` rows a shard, a
    page table `width` pages wide and `pages_per_shard` pages a shard (the sink included), the decode copy of
    the weights in `dtype` on DECODE_RULES (`abstract_state`: the model's nnx state, Variables of abstract
    values carrying their logical axes)."""
    shards = shard_count(mesh)

    def sds(shape: tuple[int, ...], dt: Any, spec: PartitionSpec | None = None) -> Any:
        return jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, spec or PartitionSpec()))

    state = _decode_weights(mesh, abstract_state, dtype)
    page = (int(text.num_key_value_heads), shards * pages_per_shard, page_size, int(text.head_dim))
    pool = PartitionSpec(None, SHARD_AXES)
    layers = range(int(text.num_hidden_layers))
    pages = PagedKV(k=tuple(sds(page, dtype, pool) for _ in layers), v=tuple(sds(page, dtype, pool) for _ in layers))
    vocab = int(text.vocab_size)
    split = PartitionSpec(SHARD_AXES)
    b = shards * slots_per_shard
    per_row = functools.partial(sds, (b,), spec=split)
    return (
        state, pages,
        sds((shards * (slots_per_shard + 1), vocab), jnp.float32, split),  # slot_logits
        sds((prompts, vocab), jnp.float32),  # prefill_logits
        per_row(jnp.int32), per_row(jnp.bool_), per_row(jnp.int32),  # slot_ids, fresh, prompt
        sds((b, width), jnp.int32, split),  # page_table
        per_row(jnp.int32), per_row(jnp.int32), per_row(jnp.int32), per_row(jnp.int32),  # lengths .. limit
        per_row(jnp.bool_), per_row(jnp.int32),  # active, row_ids
        sds((rows,), jax.random.key(0).dtype),  # row_keys
        sds((), jnp.float32), sds((), jnp.float32), sds((2,), jnp.int32), sds((), jnp.int32),
        sds((shards,), jnp.int32, split),  # exit_at
    )  # fmt: skip


def sharded_prefill_pages(mesh: Mesh, graphdef: Any) -> Any:
    """A jitted `prefill_pages` in which every shard prefills its own group of prompts into its own pages.

    Per-shard inputs are concatenated over shards on their leading dim (position_ids [3, shards * G, L] on dim 1,
    pages on their page dim): prefill_logits [shards * prompts a shard, V], input_ids / attention_mask [shards * G,
    L], starts / logit_rows [shards * G] (shard-local prompt rows), page_ids [shards * G, W] (local page ids); the
    vision inputs are `shards` blocks (`VisionInputs.groups`), one a shard; the decode copy is replicated."""
    from vinci_jax.sampling.engine import prefill_pages

    rows, rep = PartitionSpec(SHARD_AXES), PartitionSpec()
    pool = PartitionSpec(None, SHARD_AXES)

    def local(state, pages, prefill_logits, input_ids, attention_mask, position_ids, vision, starts, logit_rows,
              page_ids):  # fmt: skip
        if vision is not None:  # this shard's block of the stacked vision inputs
            vision = dataclasses.replace(vision, groups=1, num_merged_tokens=vision.num_merged_tokens[0])
        return prefill_pages(graphdef, state, pages, prefill_logits, input_ids, attention_mask, position_ids,
                             vision, starts, logit_rows, page_ids)  # fmt: skip

    def run(state, pages, prefill_logits, input_ids, attention_mask, position_ids, vision, starts, logit_rows,
            page_ids):  # fmt: skip
        pages_spec = jax.tree.map(lambda _: pool, pages)
        in_specs = (jax.tree.map(lambda _: rep, state), pages_spec, rows, rows, rows, PartitionSpec(None, SHARD_AXES),
                    jax.tree.map(lambda _: rows, vision), rows, rows, rows)  # fmt: skip
        body = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(pages_spec, rows),
                             axis_names=set(mesh.axis_names), check_vma=False)  # fmt: skip
        return body(state, pages, prefill_logits, input_ids, attention_mask, position_ids, vision, starts,
                    logit_rows, page_ids)  # fmt: skip

    return jax.jit(run, donate_argnums=(1, 2))


def prefill_pages_inputs(
    mesh: Mesh, abstract_state: Any, text: Any, *, group: int, length: int, pages_per_shard: int, page_size: int,
    prompts_per_shard: int, vision: Any = None, dtype: Any = jnp.bfloat16,
) -> tuple[Any, ...]:  # fmt: skip
    """Abstract arguments of `sharded_prefill_pages(...)`: a group of `group` prompts of `length` columns a shard
    (`vision`: one VisionInputs block of their images, its abstract arrays, or None), pages as in
    `decode_burst_inputs`, the first-token logits of `prompts_per_shard` prompts a shard."""
    shards = shard_count(mesh)
    split, pool = PartitionSpec(SHARD_AXES), PartitionSpec(None, SHARD_AXES)

    def sds(shape: tuple[int, ...], dt: Any, spec: PartitionSpec | None = None) -> Any:
        return jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, spec or PartitionSpec()))

    state = _decode_weights(mesh, abstract_state, dtype)
    page = (int(text.num_key_value_heads), shards * pages_per_shard, page_size, int(text.head_dim))
    layers = range(int(text.num_hidden_layers))
    pages = PagedKV(k=tuple(sds(page, dtype, pool) for _ in layers), v=tuple(sds(page, dtype, pool) for _ in layers))
    b = shards * group
    blocks = None
    if vision is not None:  # `shards` copies of one block, stacked on the leading dim of every array
        stack = lambda x: sds((shards * (x.shape[0] if x.shape else 1), *x.shape[1:]), x.dtype, split)  # noqa: E731
        blocks = dataclasses.replace(jax.tree.map(stack, vision), groups=shards)
    return (
        state, pages,
        sds((shards * prompts_per_shard, int(text.vocab_size)), jnp.float32, split),  # prefill_logits
        sds((b, length), jnp.int32, split), sds((b, length), jnp.int32, split),  # input_ids, attention_mask
        sds((3, b, length), jnp.int32, PartitionSpec(None, SHARD_AXES)),  # position_ids
        blocks,
        sds((b,), jnp.int32, split), sds((b,), jnp.int32, split),  # starts, logit_rows
        sds((b, pages_for_tokens(length, page_size)), jnp.int32, split),  # page_ids
    )  # fmt: skip


def _decode_weights(mesh: Mesh, abstract_state: Any, dtype: Any) -> Any:
    """The decode copy's abstract weights: floating leaves in `dtype`, laid out on DECODE_RULES."""

    def weight(variable: nnx.Variable) -> nnx.Variable:
        leaf = variable.get_value()
        dt = dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf.dtype
        names = variable.get_metadata().get("logical_axes") or (None,) * len(leaf.shape)
        spec = logical_to_spec(names, leaf.shape, mesh, rules=DECODE_RULES)
        return variable.replace(jax.ShapeDtypeStruct(tuple(leaf.shape), dt, sharding=NamedSharding(mesh, spec)))

    return jax.tree.map(weight, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
