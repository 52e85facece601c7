"""Fixtures for the reward tests: tiny random HF DINOv2 checkpoints and synthetic chart-like images."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw


def draw_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic picture with a few filled rectangles, lines and text (a stand-in for a render)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(180, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, max(9, width // 2))), int(rng.integers(8, max(9, height // 2)))
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(4):
        pts = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(pts, fill=(0, 0, 0), width=3)
    draw.text((5, 5), f"img {seed}", fill=(0, 0, 0))
    return image


def save_tiny_dinov2(path, seed: int = 0, **overrides) -> torch.nn.Module:
    """Save a tiny random transformers Dinov2Model (weights perturbed so no layer is trivial); returns it."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)
    kwargs.update(overrides)
    model = Dinov2Model(Dinov2Config(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory):
    """(directory, torch model) of a tiny random Dinov2Model saved with save_pretrained.

    Patch 32 keeps a 448 crop at 14 x 14 tokens so whole-reward tests stay fast; the 3 x 3 position grid is still
    interpolated (to 14 x 14), and patch-14 parity is covered by test_reward_dinov2_parity.py.
    """
    path = tmp_path_factory.mktemp("tiny_dinov2")
    return str(path), save_tiny_dinov2(path, patch_size=32, image_size=96)


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def save_dinov2():
    """The `save_tiny_dinov2(path, seed=0, **config)` helper (importlib mode cannot import conftest directly)."""
    return save_tiny_dinov2


@pytest.fixture(scope="session")
def draw():
    """The `draw_image(width, height, seed)` helper."""
    return draw_image
