"""The engine's data-parallel decode step: each shard decodes its own slots over its own pages, exactly as the
single-device step does on that shard's inputs; its abstract-input builder lowers on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vinci_jax import sharding
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.paged import PagedKV
from vinci_jax.sampling.engine import _burst
from vinci_jax.sampling.engine_shards import decode_burst_inputs, sharded_decode_burst

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
