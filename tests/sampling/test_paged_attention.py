"""Paged decode attention reads exactly each row's own pages, and the page allocator never over-hands pages."""

import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax.models.attention import paged_decode_attention
from vinci_jax.sampling.pages import SINK_PAGE, PageAllocator


def test_paged_attention_equals_dense_attention_over_each_rows_keys():
    rng = np.random.default_rng(0)
    kv, heads, d, size, num_pages = 2, 4, 8, 4, 16
    lengths = np.asarray([1, 4, 7, 13])  # one key; a whole page; a partial page; four pages
    k_pages = jnp.asarray(rng.normal(size=(kv, num_pages, size, d)), jnp.float32)
    v_pages = jnp.asarray(rng.normal(size=(kv, num_pages, size, d)), jnp.float32)
    order = rng.permutation(np.arange(1, num_pages))  # rows own scattered pages; unused entries point at the sink
    table = np.full((4, 4), SINK_PAGE, np.int32)
    used = 0
    for row, length in enumerate(lengths):
        count = -(-length // size)
        table[row, :count] = order[used : used + count]
        used += count
    q = jnp.asarray(rng.normal(size=(4, heads, d)), jnp.float32)
    got = paged_decode_attention(q, k_pages, v_pages, jnp.asarray(table), jnp.asarray(lengths), implementation="xla")
    kp, vp, qn = np.asarray(k_pages), np.asarray(v_pages), np.asarray(q)
    for row, length in enumerate(lengths):  # numpy reference: softmax over the row's first `length` keys
        keys = kp[:, table[row]].reshape(kv, -1, d)[:, :length]  # [KV, L, D]
        values = vp[:, table[row]].reshape(kv, -1, d)[:, :length]
        groups = qn[row].reshape(kv, heads // kv, d)
        scores = np.einsum("kgd,kld->kgl", groups, keys) / np.sqrt(d)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        want = np.einsum("kgl,kld->kgd", weights / weights.sum(-1, keepdims=True), values).reshape(heads, d)
        np.testing.assert_allclose(np.asarray(got[row]), want, atol=1e-5, err_msg=f"row {row}")
    # garbage in pages a row does not own (or past its length) changes nothing
    noisy = k_pages.at[:, SINK_PAGE].set(1e3).at[:, int(order[-1])].set(-1e3)
    again = paged_decode_attention(q, noisy, v_pages, jnp.asarray(table), jnp.asarray(lengths), implementation="xla")
    np.testing.assert_allclose(np.asarray(again), np.asarray(got), atol=1e-6)


def test_allocator_hands_out_each_page_once_and_never_the_sink():
    alloc = PageAllocator(6)
    first = alloc.take(3)
    assert alloc.take(3) is None and alloc.available == 2  # a refused request takes nothing
    second = alloc.take(2)
    assert sorted(first + second) == [1, 2, 3, 4, 5] and alloc.in_use == 5
    alloc.give(first)
    assert alloc.available == 3
    with pytest.raises(ValueError):
        alloc.give([SINK_PAGE])
