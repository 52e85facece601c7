"""The numpy/PIL image processor against transformers' Qwen2VLImageProcessorPil (the oracle), bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from vinci_jax.processing import ImageProcessor, smart_resize


def random_image(rng: np.random.Generator, height: int, width: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def palette_with_transparency(rng: np.random.Generator) -> Image.Image:
    image = Image.fromarray(rng.integers(0, 16, (33, 47), dtype=np.uint8), "P")
    image.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
    image.info["transparency"] = 3
    return image


def hf_outputs(processor: Qwen2VLImageProcessorPil, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    out = processor(images=images, return_tensors="np")
    return out["pixel_values"], out["image_grid_thw"]


@pytest.fixture(scope="module")
def mixed_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        random_image(rng, 37, 91),  # odd size, rounds to a 28-multiple
        random_image(rng, 5, 9),  # tiny: scaled up to min_pixels
        random_image(rng, 1500, 1999),  # large: scaled down to max_pixels
        random_image(rng, 28, 28),
        random_image(rng, 333, 222),
        random_image(rng, 50, 61, "RGBA"),  # alpha composited onto white
        random_image(rng, 70, 45, "L"),  # greyscale
        random_image(rng, 40, 90, "LA"),
        palette_with_transparency(rng),
    ]


def test_pixel_values_and_grids_identical_to_transformers(mixed_images):
    ours_pixels, ours_grid = ImageProcessor()(mixed_images)
    ref_pixels, ref_grid = hf_outputs(Qwen2VLImageProcessorPil(), mixed_images)
    assert ours_pixels.dtype == np.float32 and ours_grid.dtype == np.int64
    np.testing.assert_array_equal(ours_grid, ref_grid)
    assert ours_pixels.shape == ref_pixels.shape == (int(ref_grid.prod(axis=1).sum()), 3 * 2 * 14 * 14)
    np.testing.assert_array_equal(ours_pixels, ref_pixels)
    # The two limits were really exercised.
    areas = ours_grid[:, 1] * ours_grid[:, 2] * 14 * 14
    assert areas.max() <= 28 * 28 * 1280 and areas.max() > 28 * 28 * 1000
    assert areas.min() >= 56 * 56


def test_custom_pixel_limits_identical_to_transformers(mixed_images):
    limits = dict(min_pixels=128 * 28 * 28 // 8, max_pixels=64 * 28 * 28)
    ours = ImageProcessor(**limits)(mixed_images)
    ref = hf_outputs(Qwen2VLImageProcessorPil(**limits), mixed_images)
    np.testing.assert_array_equal(ours[1], ref[1])
    np.testing.assert_array_equal(ours[0], ref[0])
    assert ours[1][:, 1:].prod(axis=1).max() * 14 * 14 <= limits["max_pixels"]


def test_smart_resize_matches_reference_over_a_grid_of_sizes():
    sizes = [1, 2, 13, 27, 28, 29, 55, 56, 57, 100, 255, 480, 719, 1023, 3001]
    for h in sizes:
        for w in sizes:
            if max(h, w) / min(h, w) > 200:
                with pytest.raises(ValueError, match="aspect ratio"):
                    smart_resize(h, w)
                continue
            got = smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280)
            assert got == hf_smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280), (h, w)
            assert got[0] % 28 == 0 and got[1] % 28 == 0


def test_patch_order_is_merge_window_major():
    """Each run of merge_size**2 rows holds one 2x2 window of neighbouring 14x14 patches, frames duplicated."""
    processor = ImageProcessor()
    chw = np.arange(3 * 56 * 84, dtype=np.float32).reshape(3, 56, 84)
    flat, grid = processor.patchify(chw)
    assert grid == (1, 4, 6)
    patches = flat.reshape(-1, 3, 2, 14, 14)
    np.testing.assert_array_equal(patches[:, :, 0], patches[:, :, 1])  # temporal duplication
    # Row 1 of the flat array is the patch right of row 0; row 2 is the patch below row 0; row 4 starts window 2.
    np.testing.assert_array_equal(patches[0, :, 0], chw[:, 0:14, 0:14])
    np.testing.assert_array_equal(patches[1, :, 0], chw[:, 0:14, 14:28])
    np.testing.assert_array_equal(patches[2, :, 0], chw[:, 14:28, 0:14])
    np.testing.assert_array_equal(patches[4, :, 0], chw[:, 0:14, 28:42])
    np.testing.assert_array_equal(patches[12, :, 0], chw[:, 28:42, 0:14])


def test_config_round_trip_with_transformers(tmp_path, mixed_images):
    ours = ImageProcessor(min_pixels=3136, max_pixels=200704)
    ours.save_pretrained(tmp_path)
    hf = Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
    assert (hf.size["shortest_edge"], hf.size["longest_edge"]) == (3136, 200704)
    np.testing.assert_array_equal(ours(mixed_images[:3])[0], hf_outputs(hf, mixed_images[:3])[0])
    assert ImageProcessor.from_pretrained(tmp_path) == ours

    # A directory written by transformers (size dict only) loads to the same settings.
    hf_dir = tmp_path / "hf"
    Qwen2VLImageProcessorPil(min_pixels=1000, max_pixels=90000).save_pretrained(hf_dir)
    loaded = ImageProcessor.from_pretrained(hf_dir)
    assert (loaded.min_pixels, loaded.max_pixels) == (1000, 90000)

    # Released checkpoints carry top-level min_pixels/max_pixels that override `size`.
    config = json.loads((hf_dir / "preprocessor_config.json").read_text())
    config.update(min_pixels=3136, max_pixels=12845056)
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(config))
    loaded = ImageProcessor.from_pretrained(hf_dir)
    assert (loaded.min_pixels, loaded.max_pixels) == (3136, 12845056)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        ImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="PIL"):
        ImageProcessor()([np.zeros((28, 28, 3), np.uint8)])
    with pytest.raises(ValueError, match="aspect ratio"):
        ImageProcessor()([Image.new("RGB", (5000, 10))])
    pixels, grid = ImageProcessor()([])
    assert pixels.shape == (0, 1176) and grid.shape == (0, 3)
