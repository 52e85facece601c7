"""One process of a toy GRPO run (real SVG renderer and reward in the loop), in 1 or 2 JAX processes.

Run by tests/launch/test_multihost.py: `python multihost_grpo_worker.py CKPT OUT --render_on owner|spread
[--coordinator_address A --num_processes 2 --process_id I]`. Every process samples the same global batch on the
global mesh, renders and scores only its share of the rollouts (`render_assignment`), exchanges the scores, then
takes the GRPO step. Writes OUT/process_<i>.json: per step the rewards, the loss and the parameter norm, and which
rollout rows this process rendered.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

IMAGE, VSTART, VEND, EOS, PAD = 1000, 1002, 1003, 1010, 1011
PALETTE = ["red", "blue", "green", "yellow", "black", "purple", "orange", "gray"]
PROMPTS, N, STEPS = 4, 4, 2


class ToyProcessor:
    """decode(): token t -> a fenced SVG filling the canvas with PALETTE[t % 8] (the target is red)."""

    pad_token_id = PAD

    def decode(self, ids) -> str:
        if not len(ids):
            return ""
        rect = f'<rect width="64" height="64" fill="{PALETTE[int(ids[0]) % len(PALETTE)]}"/>'
        return f'```svg\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">{rect}</svg>\n```'


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--render_on", default="owner")
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    args = parser.parse_args(argv)

    import jax

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

    import optax
    from PIL import Image

    from renderers import RenderPool
    from vinci_jax import sharding
    from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
    from vinci_jax.reward.config import RewardConfig
    from vinci_jax.reward.visual import VisualReward
    from vinci_jax.rl.grpo_step import GRPOLossConfig
    from vinci_jax.rl.rollout import render_assignment, sample_render_score
    from vinci_jax.rl.updater import GRPOUpdater
    from vinci_jax.sampling import Sampler, SamplingParams
    from vinci_jax.train import train_state as ts

    mesh = sharding.make_mesh({"data": -1})
    model = load_qwen2_5_vl(args.checkpoint, mesh=mesh)
    rng = np.random.default_rng(0)  # the same global batch on every process
    prompts = [
        {
            "input_ids": np.asarray([VSTART, IMAGE, VEND, *rng.integers(0, 900, 4)], np.int32),
            "pixel_values": rng.normal(size=(4, 3 * 2 * 14 * 14)).astype(np.float32),
            "image_grid_thw": np.asarray([(1, 2, 2)], np.int64),
        }
        for _ in range(PROMPTS)
    ]
    owners = np.repeat(np.arange(jax.process_count()), PROMPTS // jax.process_count())
    split = ts.split_model(model)
    optimizer = optax.adam(2e-2)
    trainable = jax.tree.map(lambda _: True, split.params)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda p: ts.init_train_state(p, optimizer))(split.params)
    updater = GRPOUpdater(
        split, optimizer, optax.constant_schedule(2e-2), trainable, GRPOLossConfig(), mesh,
        group_size=N, micro_batch_rows=16, vision_config=model.config.vision, pad_token_id=PAD,
    )  # fmt: skip
    local_mesh = sharding.make_mesh({"data": -1}, jax.local_devices())
    reward = VisualReward(RewardConfig(encoder="offline-msssim-hist"), mesh=local_mesh)
    target = Image.new("RGB", (64, 64), "red")
    record = {"steps": []}
    with RenderPool(num_workers=1, languages=["svg"], timeout_s=10.0) as pool:
        for step in range(STEPS):
            renders_here = render_assignment(args.render_on, owners)
            with jax.set_mesh(mesh):
                rollouts = sample_render_score(
                    Sampler(split.merge(state["params"]), (EOS,), PAD), ToyProcessor(), model.config, prompts,
                    ["Write the SVG code for this image."] * PROMPTS, [target] * PROMPTS, list(range(PROMPTS)),
                    SamplingParams(n=N, max_new_tokens=1), jax.random.key(step), pool, reward, chunk_prompts=2,
                    renders_here=renders_here,
                )  # fmt: skip
            state, metrics = updater.update(state, rollouts)
            rendered = [r for r, prompt in enumerate(rollouts.prompt_of_row) if renders_here(r, int(prompt))]
            record["steps"].append({
                "rewards": rollouts.rewards.tolist(),
                "statuses": rollouts.statuses,
                "loss": metrics["loss"],
                "param_norm": metrics["param_norm"],
                "rendered_here": rendered,
                "local_results": [r for r, res in enumerate(rollouts.render_results) if res is not None],
                "prompt_of_row": rollouts.prompt_of_row.tolist(),
            })  # fmt: skip
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"process_{jax.process_index()}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
