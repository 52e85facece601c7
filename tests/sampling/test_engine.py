"""The paged, continuous-batching rollout engine against the lockstep sampler (same per-row keys) on a tiny
checkpoint with images and mixed prompt lengths: same tokens, stop and length rules, pages all given back, exact
under preemption, shared prompt pages left intact, log-probs equal to a teacher-forced forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index
from vinci_jax.models.qwen2_5_vl.vision_inputs import prepare_vision_inputs
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch
from vinci_jax.sampling.engine import Engine, EngineConfig, _Run

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
PATCH_DIM = 3 * 2 * 14 * 14
MAX_NEW = 9


def _prompt(rng, grid, before, after):
    t, h, w = grid
    ids = list(rng.integers(0, 900, before)) + [VSTART] + [IMAGE] * (t * h * w // 4) + [VEND]
    ids += list(rng.integers(0, 900, after))
    return {
        "input_ids": np.asarray(ids, np.int32),
        "pixel_values": rng.normal(size=(t * h * w, PATCH_DIM)).astype(np.float32),
        "image_grid_thw": np.asarray([grid], np.int64),
    }


@pytest.fixture(scope="module")
def setup(tiny_qwen25_dir):
    jax.config.update("jax_default_matmul_precision", "highest")
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    rng = np.random.default_rng(0)
    # prompt lengths 16 (a whole number of 4-token pages), 19 and 5
    prompts = [_prompt(rng, (1, 4, 6), 5, 3), _prompt(rng, (1, 6, 4), 2, 9), _prompt(rng, (1, 2, 2), 1, 1)]
    batch = make_prompt_batch(prompts, model.config, PAD)
    params = SamplingParams(n=3, temperature=0.8, max_new_tokens=MAX_NEW)
    keys = jax.random.split(jax.random.key(5), batch.batch_size * params.n)
    free = Sampler(model, (EOS,), PAD).generate_with_row_keys(batch, params, keys)
    # a stop token that row 0 samples first: that row stops at step 1; rows that never sample it hit the limit
    stops = (int(free.tokens[0, 0]), EOS)
    lockstep = Sampler(model, stops, PAD).generate_with_row_keys(batch, params, keys)
    yield model, prompts, batch, params, keys, stops, lockstep
    jax.config.update("jax_default_matmul_precision", None)


def _assert_same(out, ref):
    np.testing.assert_array_equal(out.lengths, ref.lengths)
    np.testing.assert_array_equal(out.finished, ref.finished)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
    np.testing.assert_array_equal(out.prompt_index, ref.prompt_index)


def test_engine_equals_lockstep_sampler(setup):
    model, _, batch, params, keys, stops, lockstep = setup
    assert lockstep.lengths.min() == 1 and lockstep.lengths.max() == MAX_NEW and not lockstep.finished.all()
    engine = Engine(model, stops, PAD, EngineConfig(slots=4, page_size=4, num_pages=64, steps_per_sync=3))
    out = engine.generate_with_row_keys(batch, params, keys)
    _assert_same(out, lockstep)
    assert engine.stats.pages_in_use_after == 0
    assert engine.stats.preemptions == 0
    assert engine.stats.useful_tokens == int(lockstep.lengths.sum())


def test_preemption_under_a_tiny_pool_gives_identical_outputs(setup):
    model, _, batch, params, keys, stops, lockstep = setup
    # 9 pages: the sink and one row's worst case (19 + 9 tokens in 4-token pages = 7) plus one
    engine = Engine(model, stops, PAD, EngineConfig(slots=4, page_size=4, num_pages=9, steps_per_sync=2))
    out = engine.generate_with_row_keys(batch, params, keys)
    assert engine.stats.preemptions > 0
    assert engine.stats.peak_pages <= 8
    _assert_same(out, lockstep)
    assert engine.stats.pages_in_use_after == 0


def test_shared_prompt_pages_stay_intact_while_samples_write(setup):
    model, _, batch, params, keys, stops, _ = setup
    engine = Engine(model, stops, PAD, EngineConfig(slots=6, page_size=4, num_pages=64, steps_per_sync=2))
    run = _Run(engine, batch, params, keys)
    checked = 0
    for _ in run.loop():  # after every finished row, the other samples have written their own pages
        for prompt, pages in run.shared.items():
            length = int(batch.prompt_lengths[prompt])
            start = run.columns - length
            for layer in (0, len(run.dense_k) - 1):
                got = np.asarray(run.pages.k[layer][:, jnp.asarray(pages)])  # [KV, pages, P, D]
                got = got.transpose(1, 2, 0, 3).reshape(-1, *got.shape[::3][:1], got.shape[-1])
                want = np.asarray(run.dense_k[layer][prompt, start : start + len(pages) * run.size])
                np.testing.assert_array_equal(got.reshape(want.shape), want)
                checked += 1
    assert checked > 0
    # prompt 0 (16 tokens) shares 4 full pages among its 3 samples; the samples' tables start with them
    assert run.stats.pages_in_use_after == 0


def _teacher_forced_logprobs(model, prompt, response, temperature):
    ids = np.concatenate([prompt["input_ids"], response])[None]
    positions, _ = get_rope_index(ids, prompt["image_grid_thw"], image_token_id=IMAGE)
    vision = prepare_vision_inputs(prompt["image_grid_thw"], prompt["pixel_values"], model.config.vision)
    logits = model(jnp.asarray(ids), jnp.asarray(positions), vision_inputs=vision)[0]
    start = len(prompt["input_ids"])
    scaled = jax.nn.log_softmax(logits[start - 1 : start - 1 + len(response)] / temperature, axis=-1)
    return np.asarray(jnp.take_along_axis(scaled, jnp.asarray(response)[:, None], axis=1)[:, 0])


def test_streamed_rows_have_teacher_forced_logprobs(setup):
    model, prompts, batch, params, keys, stops, _ = setup
    engine = Engine(model, stops, PAD, EngineConfig(slots=2, page_size=8, num_pages=32, steps_per_sync=4))
    rows = list(engine.stream(batch, params, keys))
    assert sorted(r.row for r in rows) == list(range(9))
    for r in rows[:4]:
        expected = _teacher_forced_logprobs(model, prompts[r.prompt], r.tokens, params.temperature)
        np.testing.assert_allclose(r.logprobs, expected, atol=1e-4)
