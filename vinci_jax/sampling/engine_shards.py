"""The rollout engine's decode step over a data-parallel mesh, and its abstract inputs (for `vinci_jax.aot`).

Why: a pod's page pool is far larger than one chip's memory, and a gather from a pool split over chips would
all-gather it. So each data-parallel shard (one device of the (data, fsdp) axes) owns its own slots and its own
pages: the step is `decode_burst` under `shard_map`, every row-indexed input split over the shards, the page
table holding shard-local page ids, and the decode copy of the weights replicated on every shard. Nothing
crosses chips during a burst. (The step is manual over every mesh axis, since the TPU paged-attention kernel
cannot be partitioned automatically: a tensor axis > 1 only repeats each shard's work.)

`decode_burst_inputs` builds ShapeDtypeStructs for one such step, so the AOT tool compiles exactly this function
for a slice (`vinci_jax.aot.programs`). The host scheduler (`engine._Run`) drives one shard today: a multi-shard
run would keep one page allocator per shard.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vinci_jax.models.paged import PagedKV
from vinci_jax.sampling.decode_policy import DECODE_RULES
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

    def weight(variable: nnx.Variable) -> nnx.Variable:
        leaf = variable.get_value()
        dt = dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf.dtype
        names = variable.get_metadata().get("logical_axes") or (None,) * len(leaf.shape)
        spec = logical_to_spec(names, leaf.shape, mesh, rules=DECODE_RULES)
        return variable.replace(sds(tuple(leaf.shape), dt, spec))

    state = jax.tree.map(weight, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
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
