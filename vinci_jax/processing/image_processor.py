"""Qwen2-VL image processor in numpy + PIL, numerically identical to transformers' PIL backend.

Every step mirrors what `Qwen2VLImageProcessorPil` computes (RGB conversion onto white, PIL bicubic resize of the
uint8 image, float64 rescale then float32, float32 normalisation, HF's patch order), so the vision tower sees the
exact pixels a released checkpoint was trained on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_CONFIG = "preprocessor_config.json"
MAX_ASPECT_RATIO = 200


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels], aspect ratio kept.

    Uses Python's round/floor/ceil exactly like the reference so grid sizes (and hence token counts) agree.
    """
    if min(height, width) <= 0:
        raise ValueError(f"image size {height}x{width} is empty; pass an image with at least one pixel")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"image {height}x{width} has aspect ratio {max(height, width) / min(height, width):.1f} > "
            f"{MAX_ASPECT_RATIO}; crop or pad it before processing"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of `image`; transparent pixels are composited onto white (as the reference does)."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageProcessor:
    """Images -> (`pixel_values` float32 [sum t*h*w, C*T*P*P], `image_grid_thw` int64 [n, 3])."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = int(Image.Resampling.BICUBIC)
    extra_config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_mean", tuple(float(m) for m in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(s) for s in self.image_std))
        object.__setattr__(self, "_table", self.normalization_table())
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}")

    @property
    def factor(self) -> int:
        """Side lengths are multiples of this so the merged 2x2 patch grid tiles the image."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return len(self.image_mean) * self.temporal_patch_size * self.patch_size * self.patch_size

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def grid_thw(self, height: int, width: int) -> tuple[int, int, int]:
        """Patch grid of one image of this size (no pixels needed: for token budgeting)."""
        h, w = self.target_size(height, width)
        return 1, h // self.patch_size, w // self.patch_size

    def num_image_tokens(self, grid_thw: Sequence[int]) -> int:
        """LLM tokens for one image: patches after the merge_size x merge_size merger."""
        t, h, w = (int(x) for x in grid_thw)
        return t * h * w // (self.merge_size**2)

    def resized_uint8(self, image: Image.Image) -> np.ndarray:
        """RGB image resized to its smart_resize target, uint8 [H, W, 3] (PIL bicubic, as the reference)."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}; decode it with PIL first")
        rgb = to_rgb(image)
        h, w = self.target_size(rgb.height, rgb.width)
        return np.asarray(rgb.resize((w, h), resample=self.resample))

    def normalization_table(self) -> np.ndarray:
        """float32 [C, 256]: the normalised value of every uint8 level, computed with the reference's arithmetic
        (float64 rescale, cast to float32, float32 (x - mean) / std). A lookup is exact and much faster."""
        levels = (np.arange(256, dtype=np.float64) * self.rescale_factor).astype(np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)[:, None]
        std = np.asarray(self.image_std, dtype=np.float32)[:, None]
        return (levels[None, :] - mean) / std

    def patchify(self, chw: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """[C, H, W] -> ([h*w, C*T*P*P], (1, h, w)): patches ordered merge-window by merge-window, as the tower expects.

        A still image is repeated temporal_patch_size times so the 3-D patch embedding sees a two-frame clip.
        """
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        channels, height, width = chw.shape
        gh, gw = height // p, width // p
        blocks = chw.reshape(channels, gh // m, m, p, gw // m, m, p)
        blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, P, P)
        blocks = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], t, p, p))
        return blocks.reshape(gh * gw, channels * t * p * p), (1, gh, gw)

    def process_one(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One image -> (float32 patches [h*w, C*T*P*P], grid (1, h, w)).

        Patches are arranged while still uint8 (a quarter of the bytes), then mapped through the normalisation table.
        """
        levels, grid = self.patchify(self.resized_uint8(image).transpose(2, 0, 1))
        table = self._table
        block = levels.shape[1] // table.shape[0]
        out = np.empty(levels.shape, dtype=np.float32)
        for c in range(table.shape[0]):
            out[:, c * block : (c + 1) * block] = table[c][levels[:, c * block : (c + 1) * block]]
        return out, grid

    def __call__(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(images, Image.Image):
            images = [images]
        if len(images) == 0:
            return np.zeros((0, self.patch_dim), np.float32), np.zeros((0, 3), np.int64)
        processed = [self.process_one(image) for image in images]
        pixel_values = processed[0][0] if len(processed) == 1 else np.concatenate([p for p, _ in processed], axis=0)
        return pixel_values, np.asarray([g for _, g in processed], dtype=np.int64)

    # ---- HF preprocessor_config.json -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageProcessor:
        """Build from a preprocessor_config dict; explicit min/max_pixels win over `size`, as in transformers."""
        size = config.get("size") or {}
        min_pixels = size.get("shortest_edge", size.get("min_pixels", 56 * 56))
        max_pixels = size.get("longest_edge", size.get("max_pixels", 28 * 28 * 1280))
        if config.get("min_pixels") is not None:
            min_pixels = config["min_pixels"]
        if config.get("max_pixels") is not None:
            max_pixels = config["max_pixels"]
        for flag in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
            if config.get(flag) is False:
                raise ValueError(f"preprocessor config sets {flag}=false, which Qwen2-VL checkpoints never use")
        return cls(
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
            patch_size=int(config.get("patch_size", 14)),
            merge_size=int(config.get("merge_size", 2)),
            temporal_patch_size=int(config.get("temporal_patch_size", 2)),
            image_mean=tuple(config.get("image_mean", OPENAI_CLIP_MEAN)),
            image_std=tuple(config.get("image_std", OPENAI_CLIP_STD)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            resample=int(config.get("resample", int(Image.Resampling.BICUBIC))),
            extra_config={k: v for k, v in config.items() if k == "processor_class"},
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> ImageProcessor:
        path = os.path.join(os.fspath(directory), PREPROCESSOR_CONFIG)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found; pass an HF checkpoint/processor directory")
        with open(path, encoding="utf-8") as f:
            return cls.from_config(json.load(f))

    def to_config(self) -> dict[str, Any]:
        """preprocessor_config.json contents that transformers' Qwen2VLImageProcessor loads to the same settings."""
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": self.extra_config.get("processor_class", "Qwen2_5_VLProcessor"),
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), PREPROCESSOR_CONFIG)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_config(), f, indent=2)
            f.write("\n")
        return path
