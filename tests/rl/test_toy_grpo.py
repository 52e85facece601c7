"""GRPO with the real renderer and reward in the loop, on a tiny model whose one-token answers pick a colour.

The toy "tokenizer" maps each token id to an SVG program filling the canvas with palette[id % 8]; the target is
red, so only red programs earn the full visual reward. GRPO must move probability mass onto the red tokens.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from renderers import RenderPool
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.reward.config import RewardConfig
from vinci_jax.reward.visual import VisualReward
from vinci_jax.rl.grpo_step import GRPOLossConfig
from vinci_jax.rl.rollout import sample_render_score
from vinci_jax.rl.updater import GRPOUpdater
from vinci_jax.sampling import Sampler, SamplingParams
from vinci_jax.train import train_state as ts

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
LR = 2e-2
PALETTE = ["red", "blue", "green", "yellow", "black", "purple", "orange", "gray"]


class ToyProcessor:
    """decode(): one token -> a fenced program (SVG of one colour, or hostile python for the failure test)."""

    pad_token_id = PAD

    def __init__(self, programs):
        self.programs = programs

    def decode(self, ids):
        return f"```{self.programs[0]}\n{self.programs[1](int(ids[0]))}\n```" if len(ids) else ""


def _svg(token):
    colour = PALETTE[token % len(PALETTE)]
    rect = f'<rect width="64" height="64" fill="{colour}"/>'
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">{rect}</svg>'


def _prompts(rng, count):
    grid = (1, 2, 2)
    return [
        {
            "input_ids": np.asarray([VSTART, IMAGE, VEND, *rng.integers(0, 900, 4)], np.int32),
            "pixel_values": rng.normal(size=(4, 3 * 2 * 14 * 14)).astype(np.float32),
            "image_grid_thw": np.asarray([grid], np.int64),
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def toy(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    with RenderPool(num_workers=2, languages=["svg", "python"], timeout_s=2.0) as pool:
        yield model, mesh, pool, VisualReward(RewardConfig(encoder="offline-msssim-hist"))


def _red_mass(model, prompt):
    from vinci_jax.sampling import make_prompt_batch

    logits, _ = Sampler(model, (EOS,), PAD).prefill(make_prompt_batch([prompt], model.config, PAD), 1)
    probs = np.asarray(jax.nn.softmax(logits[0]))
    return float(probs[np.arange(len(probs)) % len(PALETTE) == 0].sum())


def test_grpo_learns_the_colour_the_renderer_rewards(toy):
    model, mesh, pool, reward = toy
    rng = np.random.default_rng(0)
    prompts = _prompts(rng, 4)
    texts = ["Write the SVG code for this image."] * 4
    target = Image.new("RGB", (64, 64), "red")
    split = ts.split_model(model)
    optimizer = optax.adam(LR)
    # a copy: the update donates the state's buffers, and the fixture's model must stay usable
    state = ts.init_train_state(jax.tree.map(jnp.copy, split.params), optimizer)
    trainable = jax.tree.map(lambda _: True, split.params)
    updater = GRPOUpdater(
        split, optimizer, optax.constant_schedule(LR), trainable, GRPOLossConfig(), mesh,
        group_size=8, micro_batch_rows=16, vision_config=model.config.vision, pad_token_id=PAD,
    )  # fmt: skip
    processor = ToyProcessor(("svg", _svg))
    before = _red_mass(split.merge(state["params"]), prompts[0])
    rewards = []
    for step in range(6):
        sampler = Sampler(split.merge(state["params"]), (EOS,), PAD)
        rollouts = sample_render_score(
            sampler, processor, model.config, prompts, texts, [target] * 4, [0, 1, 2, 3],
            SamplingParams(n=8, max_new_tokens=1), jax.random.key(step), pool, reward, chunk_prompts=2,
        )  # fmt: skip
        # every rollout is scored: rendered, or (when the stop token came first) an empty answer with no code
        assert len(rollouts.responses) == 32 and set(rollouts.statuses) <= {"ok", "no_code"}, rollouts.statuses
        rewards.append(float(rollouts.rewards.mean()))
        state, metrics = updater.update(state, rollouts)
        assert np.isfinite(metrics["loss"]) and metrics["response_tokens"] == 32
    after = _red_mass(split.merge(state["params"]), prompts[0])
    assert after > before + 0.15 and after > 2 * before, (before, after)
    assert np.mean(rewards[-2:]) > np.mean(rewards[:2]), rewards
    # a red render of a red target is the full reward: 0.9 * 1 + 0.1 * 1
    red_rows = [i for i, r in enumerate(rollouts.render_results) if r is not None and "red" in rollouts.responses[i]]
    assert red_rows and np.allclose(rollouts.rewards[red_rows], 1.0)


def _hostile(token):
    kind = token % 3
    if kind == 0:
        return "while True:\n    pass"  # runs into the timeout
    if kind == 1:
        return "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"  # the job's process dies
    return "import matplotlib.pyplot as plt\nplt.bar([0, 1], [1, 2], color='red')"


def test_timeouts_and_crashes_become_failed_renders_without_stalling(toy):
    model, _, pool, reward = toy
    rng = np.random.default_rng(1)
    prompts = _prompts(rng, 2)
    started = time.perf_counter()
    rollouts = sample_render_score(
        Sampler(model, (EOS,), PAD), ToyProcessor(("python", _hostile)), model.config, prompts,
        ["Write matplotlib python code."] * 2, [Image.new("RGB", (64, 64), "white")] * 2, [0, 1],
        SamplingParams(n=8, max_new_tokens=1), jax.random.key(0), pool, reward, chunk_prompts=1,
    )  # fmt: skip
    assert time.perf_counter() - started < 60
    assert len(rollouts.responses) == 16 and len(rollouts.rewards) == 16  # nothing dropped
    tokens = np.concatenate([c.samples.tokens[:, 0] for c in rollouts.chunks])
    for token, result, value in zip(tokens, rollouts.render_results, rollouts.rewards, strict=True):
        if token % 3 == 2:
            assert result.ok and value > 0.1
        else:
            assert not result.ok and value == pytest.approx(0.1)  # fenced code that fails to render
