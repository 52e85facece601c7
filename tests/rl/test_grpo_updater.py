"""The real GRPOUpdater in every non-default mode, against a brute-force reference, plus the non-finite step guard.

Reference: each rollout alone (prompt + response, no padding, no micro-batching, no response window) through the
plain model forward gives log p of its response tokens; every loss here is a sum of per-token terms f(log p), so
its gradient is the VJP of those log-probs with the hand-derived per-token derivatives f'. The updater runs with
SGD at learning rate 1, so (params before - params after) is exactly its gradient.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.rl.grpo_step import GRPOLossConfig
from vinci_jax.rl.rollout import Chunk, Rollouts
from vinci_jax.rl.updater import GRPOUpdater
from vinci_jax.sampling import SampleOutput, Sampler, SamplingParams, make_prompt_batch
from vinci_jax.train import train_state as ts

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
N, TEMP = 4, 0.8
REWARDS = np.asarray([0.1, 0.5, 0.9, 0.3, 1.0, 0.2, 0.6, 0.6])
EQUAL_GROUP = np.asarray([0.1, 0.5, 0.9, 0.3, 0.7, 0.7, 0.7, 0.7])



def make_rollouts(chunks, rewards):
    rewards = np.asarray(rewards, np.float32)
    rows = len(rewards)
    return Rollouts(
        chunks=chunks, responses=[""] * rows, prompt_of_row=np.concatenate([c.start + c.samples.prompt_index
        for c in chunks]), rewards=rewards, terms={}, statuses=["ok"] * rows, render_results=[None] * rows,
        device_s=0.0, render_wait_s=0.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tiny_qwen25_dir, image_prompt):
    jax.config.update("jax_default_matmul_precision", "highest")
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    rng = np.random.default_rng(3)
    raw = [image_prompt(rng, (1, 4, 4), 5), image_prompt(rng, (1, 2, 6), 3)]
    prompts = make_prompt_batch(raw, model.config, PAD)
    samples = Sampler(model, (EOS,), PAD).generate(
        prompts, SamplingParams(n=N, temperature=TEMP, max_new_tokens=6), jax.random.key(0)
    )
    # the sampler's log-probs moved off the trainer's, so rollout-mode ratios leave the clip range and TIS matters
    noise = rng.uniform(-0.6, 0.6, samples.logprobs.shape).astype(np.float32)
    samples = dataclasses.replace(samples, logprobs=np.where(samples.tokens != PAD, samples.logprobs + noise, 0))
    chunk = Chunk(0, raw, prompts, samples)
    split = ts.split_model(model)
    reference = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(rng.normal(size=x.shape), x.dtype), split.params)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    yield model, split, chunk, reference, mesh, _brute_force_logprobs(model, split, raw, samples)
    jax.config.update("jax_default_matmul_precision", None)


def _brute_force_logprobs(model, split, raw, samples):
    """(params -> [log p of each row's response tokens]) with each rollout as its own left-padded sequence, its own
    positions from the rope index over prompt + response, the plain full-sequence forward."""
    seqs, responses = [], []
    for r in range(samples.tokens.shape[0]):
        prompt = raw[samples.prompt_index[r]]
        responses.append(samples.tokens[r, : samples.lengths[r]])
        seqs.append({**prompt, "input_ids": np.concatenate([prompt["input_ids"], responses[-1]]).astype(np.int32)})
    batch = make_prompt_batch(seqs, model.config, PAD)
    width = batch.input_ids.shape[1]

    def logprobs(params):
        logits = split.merge(params)(batch.input_ids, batch.position_ids, attention_mask=batch.attention_mask,
                                     vision_inputs=batch.vision_inputs)  # fmt: skip
        logp = jax.nn.log_softmax(logits / TEMP, axis=-1)
        out = []
        for r, response in enumerate(responses):
            n = len(response)
            rows = logp[r, width - n - 1 : width - 1]
            out.append(jnp.take_along_axis(rows, jnp.asarray(response)[:, None], axis=1)[:, 0])
        return out

    @jax.jit
    def vjp(params, cotangents):
        return jax.vjp(logprobs, params)[1](cotangents)[0]

    return jax.jit(logprobs), vjp


def _ppo_derivative(logp, old, adv, low=0.2, high=0.3, dual=3.0):
    """d/dlogp of max(-A r, -A clip(r)) (dual-clipped at -A c for A < 0): -A r where the unclipped term is active."""
    r = np.exp(logp - old)
    active = np.where(adv > 0, r <= 1 + high, r >= 1 - low)
    if dual is not None:
        active &= ~((adv < 0) & (-adv * r > -adv * dual))
    value = np.maximum(-adv * r, -adv * np.clip(r, 1 - low, 1 + high))
    if dual is not None:
        value = np.where(adv < 0, np.minimum(value, -adv * dual), value)
    return value, np.where(active, -adv * r, 0.0)


def _grpo(rewards):
    g = rewards.reshape(-1, N)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1)


ADVANTAGES = {
    "grpo": _grpo,
    "dr_grpo": lambda r: (r.reshape(-1, N) - r.reshape(-1, N).mean(1, keepdims=True)).reshape(-1),
    "rloo": lambda r: (
        r.reshape(-1, N) - (r.reshape(-1, N).sum(1, keepdims=True) - r.reshape(-1, N)) / (N - 1)
    ).reshape(-1),
}

# name: (updater kwargs, loss kwargs, rewards). Two compiled updaters cover every non-default mode (each compile is
# most of a test's time); the reference models each mode's effect on its own, so a wrong one fails either test.
# The first keeps one rollout per row (padded, needed by the per-sequence mean), the second packs rows.
MODES = {
    "rollout_kl_rloo_seqmean": (
        {"advantage": "rloo", "layout": "padded"},
        {"old_logprobs": "rollout", "kl_coef": 0.5, "loss_agg": "seq-mean-token-mean"},
        REWARDS,
    ),
    "recomputed_tis_drgrpo_filtered": (
        {"advantage": "dr_grpo", "filter_equal_groups": True}, {"old_logprobs": "recomputed", "tis_cap": 1.2},
        EQUAL_GROUP,
    ),
}  # fmt: skip


def _reference(mode, logp, rollout_lp, ref_lp):
    """(loss, per-row d loss / d log p) by hand for one mode."""
    updater_kw, loss_kw, rewards = MODES[mode]
    adv = ADVANTAGES[updater_kw.get("advantage", "grpo")](rewards.astype(np.float64))
    keep = np.ones(len(rewards), bool)
    if updater_kw.get("filter_equal_groups"):
        keep = np.repeat(np.ptp(rewards.reshape(-1, N), axis=1) > 1e-9, N)
    values, derivs = [], []
    for r, lp in enumerate(logp):
        old = rollout_lp[r] if loss_kw.get("old_logprobs") == "rollout" else lp  # recomputed = pre-update = logp
        value, deriv = _ppo_derivative(lp, old, adv[r])
        if loss_kw.get("tis_cap"):
            weight = np.minimum(np.exp(lp - rollout_lp[r]), loss_kw["tis_cap"])
            value, deriv = value * weight, deriv * weight
        if loss_kw.get("kl_coef"):
            delta = ref_lp[r] - lp
            value = value + loss_kw["kl_coef"] * (np.exp(delta) - delta - 1)
            deriv = deriv + loss_kw["kl_coef"] * (1 - np.exp(delta))
        values.append(value * keep[r])
        derivs.append(deriv * keep[r])
    if loss_kw.get("loss_agg") == "seq-mean-token-mean":
        count = keep.sum()
        return (sum(v.mean() for v in values) / count, [d / len(d) / count for d in derivs])
    tokens = sum(len(v) for v, k in zip(values, keep, strict=True) if k)
    return sum(v.sum() for v in values) / tokens, [d / tokens for d in derivs]


def _updater(split, mesh, chunk, reference, updater_kw=(), loss_kw=(), micro_batch_rows=4):
    return GRPOUpdater(
        split, optax.sgd(1.0), optax.constant_schedule(1.0), jax.tree.map(lambda _: True, split.params),
        GRPOLossConfig(temperature=TEMP, **dict(loss_kw)), mesh, group_size=N, micro_batch_rows=micro_batch_rows,
        vision_config=split.merge(split.params).config.vision, pad_token_id=PAD, reference_params=reference,
        **dict(updater_kw),
    )  # fmt: skip


def _fresh_state(split):
    return ts.init_train_state(jax.tree.map(jnp.copy, split.params), optax.sgd(1.0))


@pytest.fixture(scope="module")
def updaters(setup):
    """One updater per mode, built on first use and shared (the non-finite test reuses one)."""
    model, split, chunk, reference, mesh, _ = setup
    built = {}

    def get(mode):
        if mode not in built:
            updater_kw, loss_kw, _ = MODES[mode]
            built[mode] = _updater(split, mesh, chunk, reference, updater_kw, loss_kw)
        return built[mode]

    return get


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_matches_brute_force_reference(setup, updaters, mode):
    model, split, chunk, reference, mesh, (logprobs, vjp) = setup
    updater_kw, loss_kw, rewards = MODES[mode]
    updater = updaters(mode)
    samples = chunk.samples
    logp = [np.asarray(x, np.float64) for x in logprobs(split.params)]
    rollout_lp = [samples.logprobs[r, : samples.lengths[r]].astype(np.float64) for r in range(len(logp))]
    ref_lp = [np.asarray(x, np.float64) for x in logprobs(reference)]
    loss, derivs = _reference(mode, logp, rollout_lp, ref_lp)
    expected = vjp(split.params, [jnp.asarray(d, jnp.float32) for d in derivs])

    state, metrics = updater.update(_fresh_state(split), make_rollouts([chunk], rewards))
    assert metrics["skipped_nonfinite"] == 0.0 and int(state["step"]) == 1
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(expected))
    assert scale > 1e-3  # the reference gradient is not trivially zero
    for before, after, want in zip(*map(jax.tree.leaves, (split.params, state["params"], expected)), strict=True):
        np.testing.assert_allclose(np.asarray(before) - np.asarray(after), np.asarray(want), atol=2e-5 * scale)


def test_nonfinite_step_is_skipped_and_counted(setup, updaters):
    model, split, chunk, reference, mesh, _ = setup
    updater = updaters("rollout_kl_rloo_seqmean")
    skipped = updater.skipped_steps
    state = _fresh_state(split)
    before = jax.tree.map(np.asarray, state["params"])
    poisoned = REWARDS.copy()
    poisoned[1] = np.nan  # one NaN reward: its group's advantages, the loss and the gradient are NaN
    state, metrics = updater.update(state, make_rollouts([chunk], poisoned))
    assert metrics["skipped_nonfinite"] == 1.0 and updater.skipped_steps == skipped + 1
    assert int(state["step"]) == 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # the state is intact (not donated): the next, clean step applies as usual
    state, metrics = updater.update(state, make_rollouts([chunk], REWARDS))
    assert metrics["skipped_nonfinite"] == 0.0 and updater.skipped_steps == skipped + 1 and int(state["step"]) == 1
    assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    moved = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
             jax.tree.leaves(state["params"]), strict=True)]  # fmt: skip
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"])) and any(moved)


def test_first_fit_packs_longest_first_into_the_first_bin_with_room():
    from vinci_jax.rl.batch import first_fit, response_window, row_bucket

    assert first_fit([5, 9, 3, 7, 4, 2], 10) == [[1], [3, 2], [0, 4], [5]]
    assert sorted(sum(first_fit([6, 6, 6, 1], 12), [])) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="does not fit"):
        first_fit([11], 10)
    assert [response_window(t, 100) for t in (1, 16, 17, 99, 100)] == [16, 16, 32, 100, 100]
    assert [response_window(t, 400) for t in (1, 50, 51)] == [50, 50, 100]
    assert [row_bucket(r, 16) for r in (1, 4, 5, 13, 16)] == [4, 4, 8, 16, 16]
    assert [row_bucket(r, 3) for r in (1, 2, 3)] == [1, 2, 3]


def _synthetic_chunk(model, rng, prompts_raw, lengths, width):
    """Rollouts of the given response lengths (tokens, log-probs as a sampler would return them)."""
    prompts = make_prompt_batch(prompts_raw, model.config, PAD)
    rows = len(lengths)
    live = np.arange(width)[None] < lengths[:, None]
    samples = SampleOutput(
        tokens=np.where(live, rng.integers(0, 900, (rows, width)), PAD).astype(np.int32),
        logprobs=np.where(live, -rng.uniform(0.1, 3.0, (rows, width)), 0.0).astype(np.float32),
        lengths=lengths.astype(np.int32), finished=np.ones(rows, bool),
        prompt_index=np.repeat(np.arange(len(prompts_raw)), N).astype(np.int32),
    )  # fmt: skip
    return Chunk(0, prompts_raw, prompts, samples)


def test_packed_updates_stop_recompiling_after_warm_up(setup):
    """Text prompts, 16 rollouts of 1-24 tokens a step: packed micro-batches take one of a bounded set of shapes
    (row count and response window bucketed), each compiled once (the logged count is the executable cache's), and a
    shape depends only on the rollouts' lengths: later steps that reorder them within their groups (the padded
    layout's windows would follow whichever rollouts share a micro-batch) compile nothing."""
    model, split, chunk, reference, mesh, _ = setup
    rng = np.random.default_rng(11)
    raw = [{"input_ids": rng.integers(0, 900, k).astype(np.int32)} for k in (5, 9, 6, 8)]
    updater = _updater(split, mesh, chunk, None, micro_batch_rows=8)
    assert updater.layout == "packed"
    warm = [rng.integers(1, 25, 4 * N) for _ in range(3)]
    # the same lengths, dealt to other rollouts of the same prompt (so the same packed segment lengths)
    steps = warm + [rng.permuted(lengths.reshape(-1, N), axis=1).reshape(-1) for lengths in warm]
    compiled = []
    for lengths in steps:
        rollouts = make_rollouts([_synthetic_chunk(model, rng, raw, lengths, 24)], rng.uniform(0, 1, 4 * N))
        state, metrics = updater.update(_fresh_state(split), rollouts)
        assert metrics["skipped_nonfinite"] == 0.0 and metrics["response_tokens"] == lengths.sum()
        compiled.append(updater.grad_fn._cache_size())
        assert compiled[-1] == metrics["compiled_shapes"]  # one compile per logged shape, none unlogged
    assert compiled[-1] <= 4 * 4 and compiled[3:] == [compiled[2]] * 3, compiled  # 4 row counts x 4 windows
