"""Shared fixtures of the GRPO tests."""

from __future__ import annotations

import numpy as np
import pytest

# the tiny Qwen2.5-VL's special ids (tests/conftest.py builds it with these)
IMAGE, VSTART, VEND = 1000, 1002, 1003


def _image_prompt(rng: np.random.Generator, grid: tuple[int, int, int], text: int) -> dict[str, np.ndarray]:
    """One raw prompt: an image of `grid` (t, h, w patches; its merged pad tokens between the vision markers) then
    `text` random text tokens, with random pixels."""
    t, h, w = grid
    ids = [VSTART] + [IMAGE] * (t * h * w // 4) + [VEND] + list(rng.integers(0, 900, text))
    return {
        "input_ids": np.asarray(ids, np.int32),
        "pixel_values": rng.normal(size=(t * h * w, 3 * 2 * 14 * 14)).astype(np.float32),
        "image_grid_thw": np.asarray([grid], np.int64),
    }


@pytest.fixture(scope="session")
def image_prompt():
    """`image_prompt(rng, grid, text)` as a fixture (test modules cannot import conftest in importlib mode)."""
    return _image_prompt
