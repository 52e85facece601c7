"""Grid choice and crop counts of the reward's tiling (shared/reference/virl.md, Reward step 6)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vinci_jax.reward.tiling import candidate_grids, choose_grid, match_size, normalize, num_crops, tile_image

ISSUE_COUNTS = {
    (336, 336): 1,
    (512, 512): 1,
    (1024, 1024): 10,
    (640, 480): 13,
    (1000, 600): 7,
    (1280, 720): 9,
    (1280, 2400): 9,
    (1280, 6000): 6,
}


@pytest.mark.parametrize(("size", "count"), list(ISSUE_COUNTS.items()))
def test_crop_counts_from_the_issue(size, count):
    assert num_crops(*size) == count
    tiles = tile_image(Image.new("RGB", size, (10, 20, 30)))
    assert tiles.count == count
    assert tiles.crops.shape == (count, 448, 448, 3) and tiles.crops.dtype == np.uint8


def test_tie_rule_prefers_larger_grid_only_for_large_images():
    # square images tie between 1x1, 2x2 and 3x3; the larger grid wins only when W*H > 0.5 * 448^2 * a*b
    assert choose_grid(633, 633) == (1, 1)  # 400,689 < 401,408
    assert choose_grid(634, 634) == (2, 2)  # 401,956 > 401,408
    assert choose_grid(951, 951) == (3, 3)
    assert choose_grid(950, 950) == (2, 2)


def test_candidate_grids_sorted_by_tile_count():
    grids = candidate_grids(12)
    counts = [a * b for a, b in grids]
    assert counts == sorted(counts) and max(counts) == 12 and len(grids) == len(set(grids))
    assert choose_grid(2000, 100, max_tiles=4) == (4, 1)  # the crop cap limits the grid


def test_tiles_are_row_major_crops_of_the_resized_image_plus_thumbnail():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    tiles = tile_image(image)
    assert tiles.grid == (4, 3) and tiles.has_thumbnail
    resized = np.asarray(image.resize((4 * 448, 3 * 448), Image.BICUBIC))
    np.testing.assert_array_equal(tiles.crops[5], resized[448:896, 448:896])  # row 1, column 1
    np.testing.assert_array_equal(tiles.crops[-1], np.asarray(image.resize((448, 448), Image.BICUBIC)))


def test_crop_weights_default_to_plain_mean_and_split_coarse_fine():
    tiles = tile_image(Image.new("RGB", (1000, 600)))
    np.testing.assert_allclose(tiles.crop_weights(), np.full(7, 1 / 7))
    w = tiles.crop_weights(coarse_weight=1.0, fine_weight=3.0)
    np.testing.assert_allclose(w, [0.125] * 6 + [0.25])
    single = tile_image(Image.new("RGB", (300, 300)))
    np.testing.assert_allclose(single.crop_weights(1.0, 3.0), [1.0])


def test_match_size_and_normalize():
    render = Image.new("RGBA", (100, 50), (255, 0, 0, 128))
    out = match_size(render, (64, 64))
    assert out.size == (64, 64) and out.mode == "RGB"
    same = Image.new("RGB", (64, 64))
    assert match_size(same, (64, 64)).size == (64, 64)
    x = normalize(np.full((1, 2, 2, 3), 255, np.uint8))
    np.testing.assert_allclose(
        x[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-6
    )
