"""GRPO update pieces on a tiny real Qwen2.5-VL: batch alignment with the sampler, micro-batch accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.rl.batch import build_micro_batch
from vinci_jax.rl.grpo_step import GRPOLossConfig, add_trees, make_grad_fn, make_logprob_fn
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch
from vinci_jax.train.train_state import split_model

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011



@pytest.fixture(scope="module")
def rollouts(tiny_qwen25_dir, image_prompt):
    jax.config.update("jax_default_matmul_precision", "highest")
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    rng = np.random.default_rng(1)
    raw = [image_prompt(rng, (1, 4, 4), 6), image_prompt(rng, (1, 2, 6), 3)]
    prompts = make_prompt_batch(raw, model.config, PAD)
    samples = Sampler(model, (EOS,), PAD).generate(
        prompts, SamplingParams(n=2, temperature=0.8, max_new_tokens=7), jax.random.key(0)
    )
    yield model, raw, prompts, samples
    jax.config.update("jax_default_matmul_precision", None)


def test_training_batch_reproduces_sampler_logprobs(rollouts):
    model, raw, prompts, samples = rollouts
    rows = range(samples.tokens.shape[0])
    micro = build_micro_batch(rows, prompts, raw, samples, np.zeros(4), model.config.vision, PAD)
    split = split_model(model)
    logp = np.asarray(make_logprob_fn(split, 0.8)(split.params, micro))
    m = micro["response_mask"] > 0
    assert m.sum() == samples.lengths.sum()
    np.testing.assert_allclose(logp[m], micro["rollout_logprobs"][m], atol=1e-4)


def test_micro_batches_sum_to_the_full_batch_gradient(rollouts):
    model, raw, prompts, samples = rollouts
    advantages = np.asarray([1.0, -0.5, 0.25, -1.0], np.float32)
    split = split_model(model)
    trainable = jax.tree.map(lambda _: True, split.params)
    grad_fn = jax.jit(make_grad_fn(split, GRPOLossConfig(temperature=0.8), trainable))
    vision = model.config.vision
    full = build_micro_batch(range(4), prompts, raw, samples, advantages, vision, PAD)
    normaliser = jnp.float32(full["response_mask"].sum())
    g_full, s_full = grad_fn(split.params, full, normaliser)
    g_acc, s_acc = None, None
    for rows in ([0, 1], [2, 3]):
        g, s = grad_fn(
            split.params, build_micro_batch(rows, prompts, raw, samples, advantages, vision, PAD), normaliser
        )
        g_acc, s_acc = (g, s) if g_acc is None else (add_trees(g_acc, g), add_trees(s_acc, s))
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_acc), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert float(s_acc["tokens"]) == float(s_full["tokens"]) == float(normaliser)
    # on-policy (detached old log-probs): nothing is clipped and every ratio is exactly 1
    assert float(s_full["clipped_sum"]) == 0.0
    assert float(s_full["ratio_sum"]) == pytest.approx(float(normaliser))
    assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g_full))


def test_chunked_lm_head_equals_the_whole_window(rollouts):
    """logit_chunk (the memory fix for long responses) changes neither log-probs nor gradients; 3 does not divide
    the 16-token window, so the padded last chunk is covered too."""
    model, raw, prompts, samples = rollouts
    advantages = np.asarray([1.0, -0.5, 0.25, -1.0], np.float32)
    split = split_model(model)
    micro = build_micro_batch(range(4), prompts, raw, samples, advantages, model.config.vision, PAD)
    whole = np.asarray(make_logprob_fn(split, 0.8)(split.params, micro))
    chunked = np.asarray(jax.jit(make_logprob_fn(split, 0.8, logit_chunk=3))(split.params, micro))
    assert micro["targets"].shape[1] % 3
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    trainable = jax.tree.map(lambda _: True, split.params)
    normaliser = jnp.float32(micro["response_mask"].sum())
    results = [
        jax.jit(make_grad_fn(split, GRPOLossConfig(temperature=0.8, logit_chunk=c), trainable))(
            split.params, micro, normaliser
        )
        for c in (0, 3)
    ]
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert float(results[1][1]["entropy_sum"]) == pytest.approx(float(results[0][1]["entropy_sum"]), rel=1e-5)
