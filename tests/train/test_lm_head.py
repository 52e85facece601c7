"""The chunked LM head (vinci_jax.train.lm_head): SFT's loss and gradients over chunks equal the whole row's, in
float32 on the tiny Qwen2.5-VL, with a chunk that does not divide the row (the padded last chunk counts nothing)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vinci_jax import sharding
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.train import optimizer as opt_lib
from vinci_jax.train import train_state as ts
from vinci_jax.train.lm_head import chunked_head, token_cross_entropy
from vinci_jax.train.sft_step import make_eval_step, make_train_step
from vinci_jax.train.standin import StandInConfig, StandInTextLM

ROWS, LENGTH, CHUNK = 4, 20, 6  # 6 does not divide 20: the last chunk is padded


@pytest.fixture(autouse=True)
def _exact_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _batch(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Packed text rows: two segments a row, labels on part of each, the row's tail padding (segment 0)."""
    rng = np.random.default_rng(seed)
    segment_ids = np.zeros((ROWS, LENGTH), np.int32)
    segment_ids[:, :9], segment_ids[:, 9:17] = 1, 2
    positions = np.where(segment_ids == 1, np.arange(LENGTH), np.arange(LENGTH) - 9).clip(0).astype(np.int32)
    loss_mask = ((segment_ids > 0) & (rng.random((ROWS, LENGTH)) < 0.7)).astype(np.float32)
    return {
        "input_ids": rng.integers(0, vocab, (ROWS, LENGTH)).astype(np.int32),
        "targets": rng.integers(0, vocab, (ROWS, LENGTH)).astype(np.int32),
        "loss_mask": loss_mask,
        "segment_ids": segment_ids,
        "position_ids": np.broadcast_to(positions, (3, ROWS, LENGTH)).copy(),
    }


def test_chunked_head_matches_the_whole_sequence_for_any_chunk():
    """Several per-token outputs and inputs, chunks that divide the length, do not, and exceed it."""
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(3, 11, 5)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 7, (3, 11)), jnp.int32)
    scale = jnp.asarray(rng.random((3, 11)), jnp.float32)

    def per_token(logits, t, s):
        return token_cross_entropy(logits, t)[0] * s, jnp.max(logits, axis=-1)

    whole = chunked_head(lambda h: h @ weight, hidden, per_token, (targets, scale), 0)
    for chunk in (1, 4, 11, 32):
        got = chunked_head(lambda h: h @ weight, hidden, per_token, (targets, scale), chunk)
        assert [g.shape for g in got] == [(3, 11), (3, 11)]
        for a, b in zip(got, whole, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_chunked_sft_loss_and_gradients_equal_the_whole_row(tiny_qwen25_dir):
    """The SFT train step with logit_chunk=6 against logit_chunk=0: same loss, token count and (SGD with lr 1 exposes
    them) gradients within 1e-5; the eval step's sums too. Also sharded (fsdp 4 x tensor 2)."""
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    assert model.config.text.vocab_size > 1  # the head is a real [hidden, vocab] matmul
    split = ts.split_model(model)
    sgd = optax.sgd(1.0)
    trainable = opt_lib.trainable_mask(split.params, [])
    schedule = optax.constant_schedule(1.0)
    batch = {k: jnp.asarray(v) for k, v in _batch(int(model.config.text.vocab_size)).items()}
    state = ts.init_train_state(split.params, sgd)

    def run(chunk: int):
        step = jax.jit(make_train_step(split, sgd, schedule, trainable, logit_chunk=chunk))
        new_state, metrics = step(state, batch)
        sums = jax.jit(make_eval_step(split, logit_chunk=chunk))(split.params, batch)
        return new_state["params"], metrics, sums

    whole_params, whole_metrics, whole_sums = run(0)
    chunked_params, chunked_metrics, chunked_sums = run(CHUNK)
    assert float(whole_metrics["loss"]) > 0
    np.testing.assert_allclose(chunked_metrics["loss"], whole_metrics["loss"], rtol=1e-6, atol=1e-6)
    tokens = float(batch["loss_mask"].sum())
    assert float(chunked_metrics["loss_tokens"]) == float(whole_metrics["loss_tokens"]) == tokens
    np.testing.assert_allclose(np.asarray(chunked_sums), np.asarray(whole_sums), rtol=1e-6, atol=1e-5)
    whole_flat = jax.tree_util.tree_flatten_with_path(whole_params)[0]
    text_moved = []
    for (path, b), a, p in zip(whole_flat, jax.tree.leaves(chunked_params), jax.tree.leaves(split.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
        if "visual" not in jax.tree_util.keystr(path):  # text-only rows: the vision tower gets no gradient
            text_moved.append(float(np.abs(np.asarray(b) - np.asarray(p)).max()) > 1e-6)
    assert all(text_moved) and len(text_moved) > 5  # every decoder / head gradient compared is non-zero

    # sharded: rows over 4-way FSDP, the vocabulary over 2-way tensor; chunks stay on the batch axes
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}, devices=jax.devices()[:8])
    with jax.set_mesh(mesh):
        sharded = load_qwen2_5_vl(tiny_qwen25_dir)
        sharding.shard_module(sharded, mesh)
        sharded_split = ts.split_model(sharded, mesh)
        step = jax.jit(make_train_step(sharded_split, sgd, schedule, trainable, logit_chunk=CHUNK))
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        placed = {k: jax.device_put(v, rows if k != "position_ids" else jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))) for k, v in batch.items()}  # fmt: skip
        sharded_state, sharded_metrics = step(ts.init_train_state(sharded_split.params, sgd), placed)
    np.testing.assert_allclose(sharded_metrics["loss"], whole_metrics["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
                 sharded_state["params"], whole_params)  # fmt: skip


def test_logit_chunk_needs_a_model_with_hidden_states():
    model = StandInTextLM(StandInConfig.tiny(), rngs=nnx.Rngs(0))
    split = ts.split_model(model)
    batch = {k: jnp.asarray(v) for k, v in _batch(int(model.config.vocab_size)).items()}
    with pytest.raises(ValueError, match="logit_chunk"):
        make_eval_step(split, logit_chunk=CHUNK)(split.params, batch)
