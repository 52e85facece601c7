"""The sampler against transformers' generate and against its own teacher-forced forward, on a tiny checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index
from vinci_jax.models.vision_inputs import prepare_vision_inputs
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
PATCH_DIM = 3 * 2 * 14 * 14


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
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen25_dir, dtype=torch.float32).eval()
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    rng = np.random.default_rng(0)
    prompts = [_prompt(rng, (1, 4, 6), 5, 3), _prompt(rng, (1, 6, 4), 2, 9), _prompt(rng, (1, 2, 2), 1, 1)]
    yield torch_model, model, prompts
    jax.config.update("jax_default_matmul_precision", None)


def _batch(model, prompts):
    return make_prompt_batch(prompts, model.config, PAD)


def test_greedy_matches_transformers_generate(setup):
    torch_model, model, prompts = setup
    batch = _batch(model, prompts)
    out = Sampler(model, (EOS,), PAD).generate(batch, SamplingParams(greedy=True, max_new_tokens=12))
    with torch.no_grad():
        ref = torch_model.generate(
            input_ids=torch.as_tensor(batch.input_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(batch.attention_mask, dtype=torch.long),
            pixel_values=torch.as_tensor(np.concatenate([p["pixel_values"] for p in prompts])),
            image_grid_thw=torch.as_tensor(np.concatenate([p["image_grid_thw"] for p in prompts])),
            mm_token_type_ids=torch.as_tensor(batch.input_ids == IMAGE, dtype=torch.int32),  # HF 5.x needs them
            max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=PAD,
        )[:, batch.input_ids.shape[1] :].numpy()  # fmt: skip
    for row in range(len(prompts)):
        n = out.lengths[row]
        np.testing.assert_array_equal(out.tokens[row, :n], ref[row, :n], err_msg=f"row {row}")
    assert out.tokens.shape == (3, 12)


def _teacher_forced_logprobs(model, prompts, out, row, temperature):
    """log_softmax(logits / T) of the sampled tokens from one plain forward over prompt + response."""
    prompt = prompts[out.prompt_index[row]]
    response = out.response_ids(row)
    ids = np.concatenate([prompt["input_ids"], response])[None]
    positions, _ = get_rope_index(ids, prompt["image_grid_thw"], image_token_id=IMAGE)
    vision = prepare_vision_inputs(prompt["image_grid_thw"], prompt["pixel_values"], model.config.vision)
    logits = model(jnp.asarray(ids), jnp.asarray(positions), vision_inputs=vision)[0]
    start = len(prompt["input_ids"])
    scaled = jax.nn.log_softmax(logits[start - 1 : start - 1 + len(response)] / temperature, axis=-1)
    return np.asarray(jnp.take_along_axis(scaled, jnp.asarray(response)[:, None], axis=1)[:, 0])


def test_sampled_logprobs_equal_teacher_forced_forward(setup):
    _, model, prompts = setup
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=10)
    out = Sampler(model, (EOS,), PAD).generate(_batch(model, prompts), params, jax.random.key(3))
    for row in range(out.tokens.shape[0]):
        expected = _teacher_forced_logprobs(model, prompts, out, row, params.temperature)
        np.testing.assert_allclose(out.logprobs[row, : out.lengths[row]], expected, atol=1e-4)
        assert np.all(out.logprobs[row, out.lengths[row] :] == 0)


def test_shared_prefill_equals_independent_sampling(setup):
    _, model, prompts = setup
    sampler = Sampler(model, (EOS,), PAD)
    n = 3
    keys = jax.random.split(jax.random.key(7), len(prompts) * n)
    params = SamplingParams(n=n, temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=8)
    grouped = sampler.generate_with_row_keys(_batch(model, prompts), params, keys)
    repeated = [p for p in prompts for _ in range(n)]
    single = SamplingParams(n=1, temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=8)
    independent = sampler.generate_with_row_keys(_batch(model, repeated), single, keys)
    np.testing.assert_array_equal(grouped.tokens, independent.tokens)
    np.testing.assert_allclose(grouped.logprobs, independent.logprobs, atol=1e-5)
    assert grouped.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # different keys give different continuations: the rows of a group are not copies of each other
    assert len({tuple(row) for row in grouped.tokens[:n]}) > 1


def test_rows_stop_at_their_own_step(setup):
    _, model, prompts = setup
    greedy = SamplingParams(greedy=True, max_new_tokens=10)
    free = Sampler(model, (EOS,), PAD).generate(_batch(model, prompts), greedy)
    stop = int(free.tokens[0, 2])  # row 0 emits this at step 3; other rows later or never
    stopped = Sampler(model, (stop,), PAD).generate(_batch(model, prompts), greedy)
    for row in range(len(prompts)):
        hits = np.flatnonzero(free.tokens[row] == stop)
        expected = int(hits[0]) + 1 if len(hits) else 10
        assert stopped.lengths[row] == expected, row
        assert bool(stopped.finished[row]) == bool(len(hits))
        np.testing.assert_array_equal(stopped.tokens[row, :expected], free.tokens[row, :expected])
        assert np.all(stopped.tokens[row, expected:] == PAD)
    assert stopped.lengths[0] == 3
