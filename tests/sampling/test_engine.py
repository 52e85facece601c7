"""The paged, continuous-batching rollout engine against the lockstep sampler (same per-row keys) on a tiny
checkpoint with images and mixed prompt lengths: same tokens, stop and length rules, pages all given back, exact
under preemption and prompt eviction, shared prompt pages left intact, prompts prefilled on demand between decode
bursts, log-probs equal to a teacher-forced forward."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.layers import set_scan_layers
from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index
from vinci_jax.models.qwen2_5_vl.vision_inputs import prepare_vision_inputs
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch
from vinci_jax.sampling.engine import Engine, EngineConfig, _Run, _slot_bucket, _smaller_bucket
from vinci_jax.sampling.prompts import prompt_group

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
PATCH_DIM = 3 * 2 * 14 * 14
MAX_NEW = 9
CONFIG = EngineConfig(slots=4, page_size=4, num_pages=64, steps_per_sync=2)  # 9 rows through 4 slots


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
    free = Sampler(model, (EOS, EOS), PAD).generate_with_row_keys(batch, params, keys)  # same shapes: one compile
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
    engine = Engine(model, stops, PAD, CONFIG)
    out = engine.generate_with_row_keys(batch, params, keys)
    _assert_same(out, lockstep)
    assert engine.stats.pages_in_use_after == 0
    assert engine.stats.preemptions == 0
    assert engine.stats.useful_tokens == int(lockstep.lengths.sum())
    # up to 8 running rows every size is a bucket, and a burst ends at the step a row finishes: no slot is wasted
    assert engine.stats.computed_slots == engine.stats.useful_tokens


@pytest.mark.parametrize("per_octave", [1, 4])
def test_slot_buckets_pad_less_than_one_over_per_octave_and_stay_few(per_octave):
    slots = 256
    buckets = sorted({_slot_bucket(a, slots, per_octave) for a in range(1, slots + 1)})
    assert len(buckets) <= per_octave * 8 + 1  # 8 doublings up to 256
    for active in range(1, slots + 1):
        b = _slot_bucket(active, slots, per_octave)
        assert active <= b <= slots and b in buckets
        assert (b - active) / b < 1 / per_octave or b <= 2 * per_octave
        below = _smaller_bucket(b, slots, per_octave)
        assert below < b and (below == 0 or _slot_bucket(below, slots, per_octave) < b)
        assert _slot_bucket(below + 1, slots, per_octave) == b


@pytest.mark.parametrize("pages", [9, 10])
def test_preemption_under_a_tiny_pool_gives_identical_outputs(setup, pages):
    model, _, batch, params, keys, stops, lockstep = setup
    # 9 pages: the sink and one row's worst case (19 + 9 tokens in 4-token pages = 7) plus its prompt's partial-page
    # template; with 10, idle prompts' pages are also taken back (evicted) and those prompts prefilled again
    engine = Engine(model, stops, PAD, dataclasses.replace(CONFIG, num_pages=pages))
    out = engine.generate_with_row_keys(batch, params, keys)
    assert engine.stats.preemptions > 0
    assert engine.stats.peak_pages <= pages - 1
    if pages == 10:
        assert engine.stats.evictions > 0 and engine.stats.prefilled_prompts > batch.batch_size
    _assert_same(out, lockstep)
    assert engine.stats.pages_in_use_after == 0


def test_prompt_group_keeps_the_prompts_tokens_positions_and_only_their_images(setup):
    model = setup[0]
    rng = np.random.default_rng(3)
    prompts = [_prompt(rng, (1, 4, 4), 30, 5), _prompt(rng, (1, 2, 2), 1, 1), _prompt(rng, (1, 4, 4), 2, 2)]
    batch = make_prompt_batch(prompts, model.config, PAD)  # 41, 5 and 10 tokens: 64 columns
    group = prompt_group(batch, [2, 1], 4, model.config)
    assert group.input_ids.shape == (4, 32) and batch.input_ids.shape == (3, 64)
    np.testing.assert_array_equal(group.input_ids[:2], batch.input_ids[[2, 1], 32:])
    np.testing.assert_array_equal(group.position_ids[:, :2], batch.position_ids[:, [2, 1], 32:])
    np.testing.assert_array_equal(group.prompt_lengths, [10, 5, 0, 0])
    assert not group.attention_mask[2:].any()  # padding rows
    # only the group's two images (4 + 1 merged tokens), in vision rows as long as the whole batch's
    assert int(group.vision_inputs.num_merged_tokens) == 5
    assert group.vision_inputs.full_segment_ids.shape[1] == batch.vision_inputs.full_segment_ids.shape[1]
    want = make_prompt_batch([prompts[2], prompts[1]], model.config, PAD)  # the two prompts batched on their own
    np.testing.assert_array_equal(group.vision_inputs.pixel_values[: len(want.vision_inputs.pixel_values)],
                                  want.vision_inputs.pixel_values)  # fmt: skip


def test_a_scanned_model_prefills_through_its_layer_loop(setup):
    model, _, batch, params, keys, stops, lockstep = setup
    scanned = set_scan_layers(nnx.clone(model), True)
    engine = Engine(scanned, stops, PAD, CONFIG)
    _assert_same(engine.generate_with_row_keys(batch, params, keys), lockstep)
    assert scanned.model.scan_layers  # the switch to the loop lives inside the prefill's trace only


def _resident_kv(run, prompt, layer):
    """The keys a resident prompt holds in the pool, [tokens, KV, D]: its full pages, then its partial template."""
    pages = list(run.shared[prompt]) + ([run.template[prompt]] if prompt in run.template else [])
    got = np.asarray(run.pages.k[layer][:, jnp.asarray(pages)])  # [KV, pages, P, D]
    got = got.transpose(1, 2, 0, 3).reshape(len(pages) * run.size, *got.shape[::3])
    return got[: int(run.lens[prompt])]


def test_shared_prompt_pages_stay_intact_while_samples_write(setup):
    model, _, batch, params, keys, stops, _ = setup
    engine = Engine(model, stops, PAD, CONFIG)
    _, dense = Sampler(model, stops, PAD).prefill(batch, params.max_new_tokens)  # the whole-batch prefill's keys
    run = _Run(engine, batch, params, keys)
    first: dict = {}
    checked = shared_by_many = 0
    for _ in run.loop():  # after every finished row, the other samples have written their own pages
        for prompt in run.shared:
            length = int(batch.prompt_lengths[prompt])
            start = batch.input_ids.shape[1] - length
            for layer in (0, len(run.pages.k) - 1):
                got = _resident_kv(run, prompt, layer)
                # bit-identical to what the prompt's prefill wrote, and to the whole-batch prefill up to rounding
                np.testing.assert_array_equal(got, first.setdefault((prompt, layer), got))
                want = np.asarray(dense.k[layer][prompt, start : start + length])
                np.testing.assert_allclose(got, want, atol=1e-5)
                checked += 1
        tables = [(s.prompt, tuple(s.pages)) for s in run.slots if s is not None]
        for prompt, pages in run.shared.items():  # every running sample of a prompt reads the same full pages
            readers = [t[: len(pages)] for p, t in tables if p == prompt]
            shared_by_many += len(readers) > 1
            assert len(set(readers)) <= 1 and all(r == tuple(pages) for r in readers)
    assert checked > 0 and shared_by_many > 0
    assert run.stats.pages_in_use_after == 0 and not run.shared and not run.template


def test_prompts_are_prefilled_on_demand_between_bursts(setup):
    model, _, batch, params, keys, stops, lockstep = setup
    # one prompt a prefill call: the first 4 slots take prompt 0's 3 samples and prompt 1's first, so prompt 2
    # is prefilled only once a slot frees, after decode bursts
    engine = Engine(model, stops, PAD, dataclasses.replace(CONFIG, prefill_prompts=1))
    out = engine.generate_with_row_keys(batch, params, keys)
    _assert_same(out, lockstep)
    stats = engine.stats
    assert stats.calls.startswith("PPB") and "BP" in stats.calls, stats.calls
    assert stats.prefills == stats.prefilled_prompts == batch.batch_size and stats.evictions == 0
    assert stats.calls.count("B") == stats.bursts and stats.pages_in_use_after == 0


def _teacher_forced_logprobs(model, prompts, rows, temperature):
    """log_softmax(logits / T) of each streamed row's tokens from one plain forward over prompt + response (all rows
    right-padded into one batch: one compilation)."""
    width = max(len(prompts[r.prompt]["input_ids"]) + len(r.tokens) for r in rows)
    ids = np.full((len(rows), width), PAD, np.int32)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        seq = np.concatenate([prompts[r.prompt]["input_ids"], r.tokens])
        ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
    grids = np.concatenate([prompts[r.prompt]["image_grid_thw"] for r in rows])
    pixels = np.concatenate([prompts[r.prompt]["pixel_values"] for r in rows])
    positions, _ = get_rope_index(ids, grids, mask, image_token_id=IMAGE)
    vision = prepare_vision_inputs(grids, pixels, model.config.vision)
    logits = model(jnp.asarray(ids), jnp.asarray(positions), attention_mask=jnp.asarray(mask), vision_inputs=vision)
    scaled = np.asarray(jax.nn.log_softmax(logits / temperature, axis=-1))
    out = []
    for i, r in enumerate(rows):
        start = len(prompts[r.prompt]["input_ids"])
        out.append(scaled[i, np.arange(start - 1, start - 1 + len(r.tokens)), r.tokens])
    return out


@pytest.mark.slow
def test_streamed_rows_have_teacher_forced_logprobs(setup):
    model, prompts, batch, params, keys, stops, _ = setup
    engine = Engine(model, stops, PAD, CONFIG)
    rows = list(engine.stream(batch, params, keys))
    assert sorted(r.row for r in rows) == list(range(9))
    for r, expected in zip(rows, _teacher_forced_logprobs(model, prompts, rows, params.temperature), strict=True):
        np.testing.assert_allclose(r.logprobs, expected, atol=1e-4)
