"""vLLM as ViRL's rollout engine on CPU: streamed rollouts, two ViRL steps, the pushed weights, vLLM's log-probs
against ours.

Runs where vLLM is importable (.venv-vllm; test_vllm_backend.py runs this file there as a subprocess). One engine
for the module (its start-up is most of the time): a tiny random Qwen2.5-VL ViRL run on the synthetic SVG corpus,
whose prompts carry an image.
"""

import dataclasses

import jax
import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; test_vllm_backend.py runs this in .venv-vllm")

from configs import virl as virl_config  # noqa: E402
from vinci_jax.input_pipeline.rl import RLLoader  # noqa: E402
from vinci_jax.rl.batch import build_micro_batch  # noqa: E402
from vinci_jax.rl.virl import ViRLTrainer  # noqa: E402
from vinci_jax.sampling import Sampler, SamplingParams, make_prompt_batch  # noqa: E402
from vinci_jax.sampling.engine import collect_rows  # noqa: E402
from vinci_jax.sampling.vllm_tiny import build_tiny_vllm_qwen25  # noqa: E402


@pytest.fixture(scope="module")
def trainer(tiny_svg_rl_corpus, tmp_path_factory):
    config = virl_config.get_config("tiny")
    config.model.hf_dir = str(build_tiny_vllm_qwen25(tmp_path_factory.mktemp("tiny_vllm_qwen25")))
    config.model.init_from = config.model.hf_dir
    config.workdir = str(tmp_path_factory.mktemp("virl_vllm"))
    config.data.path = str(tiny_svg_rl_corpus)
    config.num_steps = 1
    config.data.prompts_per_step = 2
    config.rollout.n = 2
    config.rollout.max_new_tokens = 8
    config.rollout.chunk_prompts = 2
    config.render.num_workers = 1
    config.checkpoint.async_save = False
    config.panel_every = 0
    config.progress = False
    config.rollout.engine = "vllm"
    trainer = ViRLTrainer(config)
    yield trainer
    trainer.close()


def _text_prompts(trainer):
    """Two fixed chat prompts without an image."""
    tokenizer = trainer.processor.tokenizer
    texts = ["Write SVG code for a red circle.", "Write a short HTML page."]
    no_image = {"image_grid_thw": np.zeros((0, 3), np.int64), "pixel_values": np.zeros((0, 1176), np.float32)}
    chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    return [{"input_ids": np.asarray(tokenizer.encode(chat.format(t)), np.int32), **no_image} for t in texts]


def _image_prompts(trainer, count=2):
    held_out = dataclasses.replace(
        trainer.loader_config, split="test", prompts_per_batch=count, shuffle=False, num_epochs=1,
        domain_weights="natural",
    )  # fmt: skip
    batch = next(iter(RLLoader(held_out, trainer.processor)))
    assert all(p.get("image_grid_thw") is not None for p in batch.prompts)  # the image goes through vLLM's input
    return list(batch.prompts)


def _greedy_both(trainer, raw, max_new=12):
    params = SamplingParams(greedy=True, max_new_tokens=max_new)
    with jax.set_mesh(trainer.mesh):
        batch = make_prompt_batch(raw, trainer.model_config, trainer.processor.pad_token_id)
        ours = Sampler(trainer.policy(), trainer.stop_ids, trainer.processor.pad_token_id).generate(batch, params)
        theirs = _streamed(trainer.vllm_sampler(), raw, params, jax.random.key(0))  # ViRL's path
    return ours, theirs


def _streamed(sampler, raw, params, key):
    rows = list(sampler.stream(raw, params, jax.random.split(key, len(raw) * params.n)))
    return collect_rows(rows, len(raw), params, sampler.pad_token_id)


def _assert_same_greedy(ours, theirs):
    np.testing.assert_array_equal(theirs.lengths, ours.lengths)
    np.testing.assert_array_equal(theirs.finished, ours.finished)
    for row in range(len(ours.lengths)):
        np.testing.assert_array_equal(theirs.response_ids(row), ours.response_ids(row))
    valid = np.arange(ours.tokens.shape[1])[None] < ours.lengths[:, None]
    gap = float(np.abs(theirs.logprobs - ours.logprobs)[valid].mean())
    print(f"[vllm] greedy log-prob mean |vLLM - ours| = {gap:.2e} over {int(valid.sum())} tokens")
    assert gap < 1e-3


def test_vllm_greedy_equals_our_sampler_on_image_prompts(trainer):
    raw = _image_prompts(trainer)
    request = trainer.vllm_sampler().requests(raw)[0]  # one pad per image: vLLM's processor expands it itself
    pads = request["prompt_token_ids"].count(trainer.model_config.image_token_id)
    assert pads == len(request["multi_modal_data"]["image"])
    _assert_same_greedy(*_greedy_both(trainer, raw))


@pytest.mark.parametrize("kind", ["text", "image"])
def test_vllm_greedy_equals_our_sampler_and_log_probs_agree_on_the_same_tokens(trainer, kind):
    raw = _text_prompts(trainer) if kind == "text" else _image_prompts(trainer)
    _assert_same_greedy(*_greedy_both(trainer, raw))
    assert trainer.vllm_sampler().pushes == 1  # same params: no second push (the image test may have run first)

    # sampled rollouts (temperature 1): vLLM's token log-probs against our model's on vLLM's own tokens
    params = SamplingParams(n=2, max_new_tokens=12, temperature=1.0)
    samples = trainer.vllm_sampler().generate_raw(raw, params, jax.random.key(3))
    again = trainer.vllm_sampler().generate_raw(raw, params, jax.random.key(3))
    np.testing.assert_array_equal(again.tokens, samples.tokens)  # per-request seeds: reproducible
    with jax.set_mesh(trainer.mesh):
        prompts = make_prompt_batch(raw, trainer.model_config, trainer.processor.pad_token_id)
        micro = build_micro_batch(
            range(len(samples.lengths)), prompts, raw, samples, np.zeros(len(samples.lengths), np.float32),
            trainer.model_config.vision, trainer.processor.pad_token_id,
        )  # fmt: skip
        ours = np.asarray(trainer.updater.logprob_fn(trainer.state["params"], trainer.updater._place(micro)))
    mask = micro["response_mask"] > 0
    gap = np.abs(ours - micro["rollout_logprobs"])[mask]
    print(f"[vllm] {kind} prompts, sampled log-prob |vLLM - ours|: mean {gap.mean():.2e}, max {gap.max():.2e} "
          f"over {mask.sum()} tokens")
    assert gap.mean() < 1e-3 and gap.max() < 1e-2


@pytest.mark.parametrize("kind", ["text", "image"])
def test_streamed_rollouts_arrive_as_each_finishes_and_equal_the_batch_path(trainer, kind):
    sampler = trainer.vllm_sampler()
    raw = _text_prompts(trainer) if kind == "text" else _image_prompts(trainer)
    params = SamplingParams(n=2, max_new_tokens=12, temperature=1.0)
    key = jax.random.key(11)
    batch = sampler.generate_raw(raw, params, key)  # one LLM.generate call

    # the iterator ViRL feeds the render pool from: the same rows, seeds and log-probs as the batch call
    streamed = _streamed(sampler, raw, params, key)
    for field in ("tokens", "logprobs", "lengths", "finished", "prompt_index"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(batch, field), err_msg=field)

    # rows forced to end at different lengths come back one by one, shortest first, each while the longer ones are
    # still running in vLLM's engine (what the iterator sees at each yield, not a timing)
    limits = np.asarray([12, 2, 8, 5])
    order, running = [], []
    for out in sampler.stream(raw, params, jax.random.split(key, len(limits)), limits):
        order.append(out.row)
        running.append(sampler.llm.llm_engine.get_num_unfinished_requests())
        np.testing.assert_array_equal(out.tokens, batch.response_ids(out.row)[: limits[out.row]])  # per-row seeds
        np.testing.assert_allclose(out.logprobs, batch.logprobs[out.row, : limits[out.row]], atol=1e-5)
    assert order == [1, 3, 2, 0]
    assert running[0] == 3 and running[-1] == 0 and running == sorted(running, reverse=True)

    # a consumer that stops early leaves no request behind in the engine (the next step's stream starts clean)
    early = sampler.stream(raw, params, jax.random.split(key, len(limits)), limits)
    assert next(early).row == 1 and sampler.llm.llm_engine.get_num_unfinished_requests() == 3
    early.close()
    assert sampler.llm.llm_engine.get_num_unfinished_requests() == 0


def test_two_virl_steps_with_vllm_rollouts_decode_with_the_updated_policy(trainer):
    raw = _text_prompts(trainer)  # the ViRL steps themselves sample image prompts through vLLM
    before = jax.tree.map(np.asarray, trainer.state["params"])
    trainer.train()  # step 1: rollouts from vLLM, then the update
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), trainer.state["params"],
                                         before))  # fmt: skip
    assert max(moved) > 0
    pushes = trainer.vllm_sampler().pushes
    ours, theirs = _greedy_both(trainer, raw)  # vLLM now decodes with the step-1 policy
    assert trainer.vllm_sampler().pushes == pushes
    _assert_same_greedy(ours, theirs)

    trainer.start_step, trainer.num_steps = 1, 2
    last = trainer.train()  # step 2 samples after another push
    assert trainer.vllm_sampler().pushes == pushes + 1
    for key in ("reward", "sample_s", "render_wait_s", "loss"):
        assert np.isfinite(last[key]), key
