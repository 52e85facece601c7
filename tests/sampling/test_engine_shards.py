"""The engine's data-parallel decode step and prefill: each shard decodes its own slots over its own pages (or
prefills its own group of prompts, with its own images, into its own pages) exactly as the single-device step does
on that shard's inputs; the abstract-input builders lower on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tests.sampling.test_engine import PAD, _prompt
from vinci_jax import sharding
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.paged import PagedKV
from vinci_jax.models.vision_inputs import stack_vision_groups
from vinci_jax.sampling import make_prompt_batch
from vinci_jax.sampling.engine import _burst, _prefill_pages
from vinci_jax.sampling.engine_shards import (
    decode_burst_inputs,
    prefill_pages_inputs,
    sharded_decode_burst,
    sharded_prefill_pages,
)
from vinci_jax.sampling.pages import SINK_PAGE

SLOTS, PAGES, SIZE, WIDTH, STEPS, PROMPTS = 3, 10, 4, 4, 3, 2


def _shard_inputs(rng, text, vocab, shard):
    """One shard's burst: random resident pages, 3 fresh rows with 5..9 cached tokens, one bucket row unused."""
    shape = (text.num_key_value_heads, PAGES, SIZE, text.head_dim)
    layers = range(text.num_hidden_layers)
    pages = PagedKV(k=tuple(rng.normal(size=shape).astype(np.float32) for _ in layers),
                    v=tuple(rng.normal(size=shape).astype(np.float32) for _ in layers))  # fmt: skip
    table = np.stack([rng.permutation(np.arange(1, PAGES))[:WIDTH] for _ in range(SLOTS)]).astype(np.int32)
    lengths = rng.integers(5, 10, SLOTS).astype(np.int32)
    active = np.asarray([True, True, shard == 0])
    return dict(
        pages=pages, slot_logits=np.zeros((SLOTS + 1, vocab), np.float32),
        slot_ids=np.arange(SLOTS, dtype=np.int32), fresh=np.ones(SLOTS, bool),
        prompt=rng.integers(0, PROMPTS, SLOTS).astype(np.int32), page_table=table, lengths=lengths,
        positions=lengths.copy(), done_steps=np.zeros(SLOTS, np.int32), limit=np.full(SLOTS, 2 + shard, np.int32),
        active=active, row_ids=(np.arange(SLOTS) + SLOTS * shard).astype(np.int32),
    )  # fmt: skip


def test_sharded_burst_equals_each_shards_own_burst(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    graphdef, state = nnx.split(model)
    text, vocab = model.config.text, model.config.text.vocab_size
    rng = np.random.default_rng(0)
    shards = [_shard_inputs(rng, text, vocab, i) for i in range(2)]
    prefill_logits = rng.normal(size=(PROMPTS, vocab)).astype(np.float32)
    row_keys = jax.random.split(jax.random.key(3), 2 * SLOTS)
    common = (jnp.float32(0.9), jnp.float32(1.0), jnp.asarray([7, 7], jnp.int32), jnp.int32(0))
    static = dict(steps=STEPS, greedy=False, top_k=0, use_top_p=False)
    want = []
    for s in shards:
        args = {k: jax.tree.map(jnp.asarray, v) for k, v in s.items()}
        want.append(_burst(graphdef, state, args.pop("pages"), args.pop("slot_logits"), jnp.asarray(prefill_logits),
                           *args.values(), row_keys, *common, jnp.int32(0), **static))  # fmt: skip
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2])
    cat = lambda *xs: np.concatenate(xs, axis=0)  # noqa: E731
    layers = zip(*(zip(s["pages"].k, s["pages"].v, strict=True) for s in shards), strict=True)
    k, v = zip(*((np.concatenate([kv[0] for kv in per], 1), np.concatenate([kv[1] for kv in per], 1))
                 for per in layers), strict=True)  # fmt: skip
    pages = PagedKV(k=k, v=v)
    rows = [cat(*(s[k] for s in shards)) for k in list(shards[0])[1:]]
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))  # the decode copy: replicated
    with jax.set_mesh(mesh):
        fn = sharded_decode_burst(mesh, graphdef, **static)
        got = fn(state, pages, *rows[:1], prefill_logits, *rows[1:], row_keys, *common, np.zeros(2, np.int32))
    pages_out, slot_logits, tokens, logprobs, done_steps, finished, ran = got
    for i, w in enumerate(want):
        part = slice(i * SLOTS, (i + 1) * SLOTS)
        np.testing.assert_array_equal(np.asarray(tokens)[part], np.asarray(w[2]))
        np.testing.assert_allclose(np.asarray(logprobs)[part], np.asarray(w[3]), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(done_steps)[part], np.asarray(w[4]))
        assert int(np.asarray(ran)[i]) == int(w[6])
        np.testing.assert_allclose(np.asarray(pages_out.k[0])[:, i * PAGES : (i + 1) * PAGES],
                                   np.asarray(w[0].k[0]), atol=1e-6)  # fmt: skip
    assert np.asarray(done_steps)[2 * SLOTS - 1] == 0  # shard 1's unused bucket row stayed idle


def test_abstract_burst_inputs_lower_on_a_data_parallel_mesh(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    graphdef, state = nnx.split(model)  # the builder reads only shapes, dtypes and logical axes
    args = decode_burst_inputs(mesh, state, model.config.text, slots_per_shard=4, pages_per_shard=16, page_size=8,
                               width=6, prompts=3, rows=32, dtype=jnp.bfloat16)  # fmt: skip
    with jax.set_mesh(mesh):
        lowered = sharded_decode_burst(mesh, graphdef, steps=2, greedy=False, top_k=0, use_top_p=False).lower(*args)
    out = lowered.out_info
    assert out[0].k[0].shape == (model.config.text.num_key_value_heads, 8 * 16, 8, model.config.text.head_dim)
    assert out[0].k[0].dtype == jnp.bfloat16 and out[2].shape == (32, 2)  # pages in bf16; tokens [rows, steps]
    assert out[6].shape == (8,)  # steps each shard ran


def _pool(rng, text, pages):
    shape = (text.num_key_value_heads, pages, SIZE, text.head_dim)
    layers = range(text.num_hidden_layers)
    return PagedKV(k=tuple(rng.normal(size=shape).astype(np.float32) for _ in layers),
                   v=tuple(rng.normal(size=shape).astype(np.float32) for _ in layers))  # fmt: skip


def _cat_pools(pools):
    k = tuple(np.concatenate(layer, 1) for layer in zip(*(p.k for p in pools), strict=True))
    v = tuple(np.concatenate(layer, 1) for layer in zip(*(p.v for p in pools), strict=True))
    return PagedKV(k=k, v=v)


def test_sharded_prefill_equals_each_shards_own_prefill(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    graphdef, state = nnx.split(model)
    text, vocab = model.config.text, model.config.text.vocab_size
    rng = np.random.default_rng(1)
    pages_per_shard, length = 20, 32
    shards = []
    for shard in range(2):  # a group of 2 prompts a shard, images of one size (the shards' vision blocks stack)
        prompts = [_prompt(rng, (1, 4, 4), 3 + shard, 2), _prompt(rng, (1, 4, 4), 1, 6 + shard)]
        batch = make_prompt_batch(prompts, model.config, PAD, length=length)
        table = np.full((2, length // SIZE), SINK_PAGE, np.int32)
        free = list(rng.permutation(np.arange(1, pages_per_shard)))
        for row, size in enumerate(batch.prompt_lengths):
            table[row, : -(-int(size) // SIZE)] = [free.pop() for _ in range(-(-int(size) // SIZE))]
        shards.append(dict(batch=batch, pool=_pool(rng, text, pages_per_shard), table=table,
                           starts=(length - batch.prompt_lengths).astype(np.int32),
                           logit_rows=np.asarray([1, 0], np.int32)))  # fmt: skip
    want = []
    for s in shards:
        b = s["batch"]
        want.append(_prefill_pages(
            graphdef, state, jax.tree.map(jnp.asarray, s["pool"]), jnp.zeros((2, vocab), jnp.float32),
            jnp.asarray(b.input_ids), jnp.asarray(b.attention_mask), jnp.asarray(b.position_ids), b.vision_inputs,
            jnp.asarray(s["starts"]), jnp.asarray(s["logit_rows"]), jnp.asarray(s["table"]),
        ))  # fmt: skip
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2])
    cat = lambda key, axis=0: np.concatenate([s["batch"].__dict__[key] for s in shards], axis)  # noqa: E731
    both = lambda key: np.concatenate([s[key] for s in shards])  # noqa: E731
    vision = stack_vision_groups([s["batch"].vision_inputs for s in shards])
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    with jax.set_mesh(mesh):
        pages, logits = sharded_prefill_pages(mesh, graphdef)(
            state, _cat_pools([s["pool"] for s in shards]), np.zeros((4, vocab), np.float32), cat("input_ids"),
            cat("attention_mask"), cat("position_ids", 1), vision, both("starts"), both("logit_rows"), both("table"),
        )  # fmt: skip
    for i, (w_pages, w_logits) in enumerate(want):
        np.testing.assert_allclose(np.asarray(logits)[2 * i : 2 * i + 2], np.asarray(w_logits), atol=1e-5)
        for layer in (0, text.num_hidden_layers - 1):
            part = slice(i * pages_per_shard, (i + 1) * pages_per_shard)
            got, expected = np.asarray(pages.v[layer])[:, part], np.asarray(w_pages.v[layer])
            np.testing.assert_allclose(got[:, 1:], expected[:, 1:], atol=1e-5)  # the sink (page 0) is scratch
    # the prefill wrote into the wanted pages (the comparison above is not between two untouched pools)
    assert not np.allclose(np.asarray(want[0][0].k[0])[:, shards[0]["table"][0, 0]],
                           shards[0]["pool"].k[0][:, shards[0]["table"][0, 0]])  # fmt: skip


def test_abstract_prefill_inputs_lower_on_a_data_parallel_mesh(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(2)
    batch = make_prompt_batch([_prompt(rng, (1, 4, 4), 3, 2), _prompt(rng, (1, 4, 4), 1, 6)], model.config, PAD)
    block = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), batch.vision_inputs)
    args = prefill_pages_inputs(mesh, state, model.config.text, group=2, length=32, pages_per_shard=16, page_size=8,
                                prompts_per_shard=3, vision=block, dtype=jnp.bfloat16)  # fmt: skip
    with jax.set_mesh(mesh):
        lowered = sharded_prefill_pages(mesh, graphdef).lower(*args)
    pages, logits = lowered.out_info
    assert pages.k[0].shape == (model.config.text.num_key_value_heads, 8 * 16, 8, model.config.text.head_dim)
    assert pages.k[0].dtype == jnp.bfloat16 and logits.shape == (8 * 3, model.config.text.vocab_size)
    assert args[6].groups == 8 and args[6].pixel_values.shape[0] == 8 * batch.vision_inputs.pixel_values.shape[0]
