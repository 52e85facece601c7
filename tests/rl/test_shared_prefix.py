"""Shared-prefix GRPO rows (a group's prompt once, then its responses) equal the unshared computation.

A tiny real Qwen2.5-VL with images; 3 rollouts (random tokens of 1-9, as a sampler returns them) for each of 2
prompts of different lengths (so the prompt slot holds left padding for one of them). The unshared reference is the
padded layout (one rollout per row, its own copy of the prompt and image), whose log-probs reproduce the sampler's
(tests/rl/test_grpo_step.py). In float32 the shared rows give the same log-probs at every response token within
1e-5, and the same gradient of the GRPO loss within 2e-5 of its largest entry (float32 summation order: a prompt
token's gradient sums its n responses' contributions inside one row instead of across n rows); the vision tower
sees each image once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.attention import BranchedSegments
from vinci_jax.rl.batch import RolloutRef, build_micro_batch, build_shared_prefix_micro_batch, slot_length
from vinci_jax.rl.grpo_step import GRPOLossConfig, make_grad_fn, make_logprob_fn
from vinci_jax.rl.rollout import Chunk, Rollouts
from vinci_jax.rl.updater import GRPOUpdater
from vinci_jax.sampling import SampleOutput, make_prompt_batch
from vinci_jax.train import train_state as ts

IMAGE, VSTART, VEND, PAD = 1000, 1002, 1003, 1011
N, TEMP, TOL = 3, 0.8, 1e-5


@pytest.fixture(scope="module")
def sampled(tiny_qwen25_dir, image_prompt):
    jax.config.update("jax_default_matmul_precision", "highest")
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    rng = np.random.default_rng(5)
    raw = [image_prompt(rng, (1, 4, 4), 7), image_prompt(rng, (1, 2, 6), 2)]
    prompts = make_prompt_batch(raw, model.config, PAD)
    lengths = np.asarray([9, 1, 5, 4, 8, 2])
    live = np.arange(9)[None] < lengths[:, None]
    samples = SampleOutput(
        tokens=np.where(live, rng.integers(0, 900, (2 * N, 9)), PAD).astype(np.int32),
        logprobs=np.where(live, -rng.uniform(0.1, 3.0, (2 * N, 9)), 0.0).astype(np.float32),
        lengths=lengths.astype(np.int32), finished=np.ones(2 * N, bool), prompt_index=np.repeat([0, 1], N),
    )  # fmt: skip
    advantages = np.asarray([1.0, -0.5, 0.25, -1.0, 0.75, -0.3], np.float32)
    yield model, raw, prompts, samples, advantages
    jax.config.update("jax_default_matmul_precision", None)


def _groups(prompts, raw, samples, advantages):
    rows = range(samples.tokens.shape[0])
    refs = [RolloutRef(prompts, raw, samples, r, float(advantages[r])) for r in rows]
    return [[ref for ref in refs if ref.prompt_index == p] for p in range(len(raw))]


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, atol=TOL * max(1.0, float(np.abs(b).max())), rtol=0)


def test_shared_prefix_rows_equal_unshared_logprobs_and_gradients(sampled):
    model, raw, prompts, samples, advantages = sampled
    vision, split = model.config.vision, ts.split_model(model)
    padded = build_micro_batch(range(2 * N), prompts, raw, samples, advantages, vision, PAD)
    slot = slot_length(int(samples.lengths.max()), samples.tokens.shape[1])
    shared = build_shared_prefix_micro_batch(
        _groups(prompts, raw, samples, advantages), prompts.input_ids.shape[1], slot, N, vision, PAD
    )
    # one row per group, each image once (the padded rows carry it once per rollout)
    assert shared["input_ids"].shape == (2, prompts.input_ids.shape[1] + N * slot)
    assert isinstance(shared["segment_ids"], BranchedSegments)
    images = int(np.sum(np.asarray(prompts.input_ids) == IMAGE))
    assert int(np.sum(shared["input_ids"] == IMAGE)) == images == int(np.sum(padded["input_ids"] == IMAGE)) // N
    merged = int(shared["vision_inputs"].num_merged_tokens)
    assert merged == images and int(padded["vision_inputs"].num_merged_tokens) == N * images  # encodes: 1 vs N

    logprob_fn = jax.jit(make_logprob_fn(split, TEMP))
    lp_padded = np.asarray(logprob_fn(split.params, padded))
    lp_shared = np.asarray(logprob_fn(split.params, shared))
    out = [0, 0]  # a row's window holds its responses back to back
    for r in range(2 * N):
        p, n = int(samples.prompt_index[r]), int(samples.lengths[r])
        assert shared["response_mask"][p, out[p] : out[p] + n].all()
        np.testing.assert_array_equal(shared["targets"][p, out[p] : out[p] + n], samples.tokens[r, :n])
        _close(lp_shared[p, out[p] : out[p] + n], lp_padded[r, :n])
        out[p] += n
    assert shared["response_mask"].sum() == samples.lengths.sum()

    trainable = jax.tree.map(lambda _: True, split.params)
    loss = GRPOLossConfig(temperature=TEMP, old_logprobs="rollout")  # ratios != 1: every loss branch is live
    grad_fn = jax.jit(make_grad_fn(split, loss, trainable))
    normaliser = jnp.float32(samples.lengths.sum())
    g_padded, s_padded = grad_fn(split.params, padded, normaliser)
    g_shared, s_shared = grad_fn(split.params, shared, normaliser)
    assert float(s_shared["tokens"]) == float(s_padded["tokens"]) == float(normaliser)
    _close(s_shared["loss"], s_padded["loss"])
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_padded))
    assert scale > 1e-3
    for a, b in zip(jax.tree.leaves(g_shared), jax.tree.leaves(g_padded), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2 * TOL * scale, rtol=0)


def _rollouts(raw, prompts, samples, rewards):
    return Rollouts(
        chunks=[Chunk(0, raw, prompts, samples)], responses=[""] * 2 * N, prompt_of_row=samples.prompt_index,
        rewards=rewards, terms={}, statuses=["ok"] * 2 * N, render_results=[None] * 2 * N, device_s=0.0,
        render_wait_s=0.0,
    )  # fmt: skip


def test_group_rows_sets_the_shared_prefix_rows_of_a_micro_batch(sampled):
    """`group_rows` (a pod's one group row per chip) decides the rows of a shared-prefix micro-batch, independently of
    micro_batch_rows (which stays the padded layout's rows); 0 keeps micro_batch_rows / n groups."""
    model, raw, prompts, samples, advantages = sampled
    split = ts.split_model(model)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    rollouts = _rollouts(raw, prompts, samples, np.zeros(2 * N, np.float32))
    keep = np.ones(2 * N, bool)
    counts = {}
    for group_rows in (0, 1, 2):
        updater = GRPOUpdater(
            split, optax.sgd(1.0), optax.constant_schedule(1.0), jax.tree.map(lambda _: True, split.params),
            GRPOLossConfig(temperature=TEMP), mesh, group_size=N, micro_batch_rows=N, vision_config=model.config.vision,
            pad_token_id=PAD, layout="shared_prefix", group_rows=group_rows,
        )  # fmt: skip
        micro = list(updater.micro_batches(rollouts, advantages, keep))
        counts[group_rows] = [m["input_ids"].shape[0] for m in micro]
        assert sum(float(m["response_mask"].sum()) for m in micro) == samples.lengths.sum()
    assert counts == {0: [1, 1], 1: [1, 1], 2: [2]}


@pytest.mark.slow
def test_updater_shared_prefix_step_equals_padded_step(sampled):
    """The real updater, SGD at learning rate 1: the shared-prefix layout's step moves the parameters exactly as the
    padded layout's (rollout old log-probs, KL off), with 2 micro-batches of one group each (accumulation)."""
    model, raw, prompts, samples, advantages = sampled
    split = ts.split_model(model)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    rewards = np.asarray([0.1, 0.5, 0.9, 0.3, 1.0, 0.2], np.float32)
    rollouts = _rollouts(raw, prompts, samples, rewards)
    params = {}
    for layout in ("padded", "shared_prefix"):
        updater = GRPOUpdater(
            split, optax.sgd(1.0), optax.constant_schedule(1.0), jax.tree.map(lambda _: True, split.params),
            GRPOLossConfig(temperature=TEMP, old_logprobs="rollout"), mesh, group_size=N, micro_batch_rows=N,
            vision_config=model.config.vision, pad_token_id=PAD, layout=layout,
        )  # fmt: skip
        state = ts.init_train_state(jax.tree.map(jnp.copy, split.params), optax.sgd(1.0))
        state, metrics = updater.update(state, rollouts)
        assert metrics["skipped_nonfinite"] == 0.0 and metrics["response_tokens"] == samples.lengths.sum()
        params[layout] = state["params"]
        if layout == "shared_prefix":
            assert metrics["micro_batches"] == 2.0 and metrics["compiled_shapes"] <= 2.0
    before = [np.asarray(x) for x in jax.tree.leaves(split.params)]
    moved = {k: [np.asarray(x) - b for x, b in zip(jax.tree.leaves(v), before, strict=True)] for k, v in params.items()}
    scale = max(float(np.abs(m).max()) for m in moved["padded"])
    assert scale > 1e-4
    for a, b in zip(moved["shared_prefix"], moved["padded"], strict=True):  # + 2 float32 ulps of |params| <= 1
        np.testing.assert_allclose(a, b, atol=2 * TOL * scale + 2.4e-7, rtol=0)


@pytest.mark.slow
def test_shared_prefix_rows_through_splash_equal_xla(sampled):
    """The whole decoder on shared-prefix rows with splash attention (interpret mode on CPU: the static block mask
    of the slot layout plus segment ids for slot padding) gives the xla path's log-probs."""
    from vinci_jax.models.attention import set_implementation

    model, raw, prompts, samples, advantages = sampled
    slot = slot_length(int(samples.lengths.max()), samples.tokens.shape[1])
    shared = build_shared_prefix_micro_batch(
        _groups(prompts, raw, samples, advantages), prompts.input_ids.shape[1], slot, N, model.config.vision, PAD
    )
    out = {}
    for implementation in ("xla", "splash"):
        split = ts.split_model(set_implementation(model, implementation))
        out[implementation] = np.asarray(jax.jit(make_logprob_fn(split, TEMP))(split.params, shared))
    set_implementation(model, "auto")
    real = shared["response_mask"] > 0
    _close(out["splash"][real], out["xla"][real])
