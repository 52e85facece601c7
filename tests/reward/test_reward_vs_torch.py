"""The whole reward against a straightforward PyTorch implementation of the released semantics.

The reference below is written independently of vinci_jax.reward: InternVL-style dynamic tiling with PIL, torch
ToTensor/Normalize arithmetic, transformers' Dinov2Model (same random weights) per rollout, target features
recomputed for every rollout, (1 + cos) / 2 averaged over crops, R = 0.9 * V + 0.1 * F.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vinci_jax.reward.config import RewardConfig
from vinci_jax.reward.encoders import Dinov2Encoder
from vinci_jax.reward.visual import VisualReward

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _reference_tiles(image: Image.Image, size: int = 448, max_num: int = 12) -> list[Image.Image]:
    width, height = image.size
    aspect = width / height
    ratios = {
        (i, j) for n in range(1, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1) if i * j <= max_num
    }
    ratios = sorted(ratios, key=lambda r: r[0] * r[1])
    best_diff, best = float("inf"), (1, 1)
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and width * height > 0.5 * size * size * ratio[0] * ratio[1]:
            best = ratio
    tw, th = size * best[0], size * best[1]
    resized = image.resize((tw, th), Image.BICUBIC)
    tiles = []
    for i in range(best[0] * best[1]):
        left, top = (i % (tw // size)) * size, (i // (tw // size)) * size
        tiles.append(resized.crop((left, top, left + size, top + size)))
    if len(tiles) != 1:
        tiles.append(image.resize((size, size), Image.BICUBIC))
    return tiles


def _reference_features(model, image: Image.Image, post_ln: bool) -> torch.Tensor:
    crops = []
    for tile in _reference_tiles(image.convert("RGB")):
        t = torch.from_numpy(np.asarray(tile).copy()).permute(2, 0, 1).float().div(255)
        crops.append((t - MEAN) / STD)
    with torch.no_grad():
        out = model(pixel_values=torch.stack(crops), output_hidden_states=True)
    return (out.last_hidden_state if post_ln else out.hidden_states[-1])[:, 0]


def reference_reward(model, prompt: str, response: str, target: Image.Image, render: Image.Image | None, post_ln=False):
    language = next((x for x in ("svg", "html", "python", "latex", "mermaid", "tikz") if x in prompt.lower()), "python")
    language = "latex" if language == "tikz" else language
    blocks = re.findall(r"```" + language + r"\s*\n(.*?)```", response, re.DOTALL)
    if not blocks:
        return 0.0
    if render is None:
        return 0.1
    render = render.convert("RGB").resize(target.size, Image.BICUBIC)
    ft = _reference_features(model, target, post_ln)  # recomputed per rollout, as released
    fr = _reference_features(model, render, post_ln)
    visual = ((1 + torch.nn.functional.cosine_similarity(ft, fr, dim=-1)) / 2).mean().item()
    return 0.9 * visual + 0.1


PAIRS = [((336, 336), (500, 300)), ((640, 480), (640, 480)), ((1000, 600), (900, 700)), ((512, 1100), (300, 200))]


@pytest.mark.parametrize("post_ln", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_reward_matches_reference(tiny_dinov2, draw, highest_precision, post_ln):
    path, torch_model = tiny_dinov2
    feature = "cls_post_ln" if post_ln else "cls_pre_ln"
    config = RewardConfig(encoder_path=path, feature=feature, crop_buckets=(16,))
    reward = VisualReward(config, encoder=Dinov2Encoder.from_pretrained(path, post_layernorm=post_ln))
    prompts, responses, targets, renders, groups = [], [], [], [], []
    for g, (target_size, render_size) in enumerate(PAIRS):
        target = draw(*target_size, seed=10 + g)
        for r in range(2):  # two rollouts per prompt group with different renders
            prompts.append("Write Python matplotlib code that reproduces this chart.")
            responses.append("Here:\n```python\nimport matplotlib\n```\n")
            targets.append(target)
            renders.append(draw(*render_size, seed=100 + 10 * g + r))
            groups.append(g)
    batch = reward.score(prompts, responses, targets, renders, groups)
    expected = [
        reference_reward(torch_model, p, r, t, im, post_ln)
        for p, r, t, im in zip(prompts, responses, targets, renders, strict=True)
    ]
    np.testing.assert_allclose(batch.total, expected, atol=1e-4, rtol=0)
    assert np.all(batch.terms["visual"] > 0.5) and np.all(batch.terms["visual"] < 1.0)
    assert batch.stats["encoder"] == f"dinov2:{feature}:float32"
