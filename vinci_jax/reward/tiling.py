"""Host-side tiling of target and rendered images, exactly as the released VinciCoder reward does it.

Grid choice: among grids (a, b) with 1 <= a*b <= max_tiles, ordered by a*b, take the one whose a/b is closest to
the image's W/H; on a tie take the later grid when W*H > 0.5 * tile^2 * a*b. The image is resized (PIL bicubic) to
(tile*a, tile*b) and cut row-major into a*b tiles; when there is more than one tile a tile x tile resize of the
whole image is appended (the coarse view). Crops stay uint8 here; ImageNet normalisation runs on the device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TILE = 448
MAX_TILES = 12


@functools.lru_cache(maxsize=16)
def candidate_grids(max_tiles: int = MAX_TILES, min_tiles: int = 1) -> tuple[tuple[int, int], ...]:
    """Grids (columns, rows) in the released order: a set of (i, j) built the same way, sorted (stably) by i*j."""
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def choose_grid(width: int, height: int, tile: int = TILE, max_tiles: int = MAX_TILES) -> tuple[int, int]:
    """(columns, rows) of the tiling for a width x height image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot tile an image of size {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def num_crops(width: int, height: int, tile: int = TILE, max_tiles: int = MAX_TILES, thumbnail: bool = True) -> int:
    """How many crops `tile_image` makes for a width x height image."""
    cols, rows = choose_grid(width, height, tile, max_tiles)
    return cols * rows + (1 if thumbnail and cols * rows > 1 else 0)


@dataclass(frozen=True)
class Tiles:
    """uint8 crops [n, tile, tile, 3] (fine tiles first, row-major, then the coarse thumbnail if any)."""

    crops: np.ndarray
    grid: tuple[int, int]
    has_thumbnail: bool

    @property
    def count(self) -> int:
        return int(self.crops.shape[0])

    def crop_weights(self, coarse_weight: float | None = None, fine_weight: float | None = None) -> np.ndarray:
        """Per-crop weights summing to 1: plain mean by default, else coarse vs fine (mean over fine tiles)."""
        n = self.count
        if coarse_weight is None and fine_weight is None or not self.has_thumbnail:
            return np.full((n,), 1.0 / n, np.float64)
        coarse = 1.0 if coarse_weight is None else float(coarse_weight)
        fine = 1.0 if fine_weight is None else float(fine_weight)
        if coarse < 0 or fine < 0 or coarse + fine <= 0:
            raise ValueError(f"coarse/fine weights must be >= 0 with a positive sum, got {coarse}, {fine}")
        weights = np.full((n,), fine / (coarse + fine) / (n - 1), np.float64)
        weights[-1] = coarse / (coarse + fine)
        return weights


def tile_image(image: Image.Image, tile: int = TILE, max_tiles: int = MAX_TILES, thumbnail: bool = True) -> Tiles:
    """Cut an RGB image into the released reward's crops."""
    image = image.convert("RGB")
    width, height = image.size
    cols, rows = choose_grid(width, height, tile, max_tiles)
    resized = np.asarray(image.resize((tile * cols, tile * rows), Image.BICUBIC))
    crops = [resized[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]
    extra = thumbnail and len(crops) > 1
    if extra:
        crops.append(np.asarray(image.resize((tile, tile), Image.BICUBIC)))
    return Tiles(np.ascontiguousarray(np.stack(crops)), (cols, rows), extra)


def match_size(render: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The render in RGB at exactly the target's (width, height), bicubic as released (no-op when equal)."""
    render = render.convert("RGB")
    return render if render.size == tuple(size) else render.resize(tuple(size), Image.BICUBIC)


def normalize(crops_uint8: np.ndarray) -> np.ndarray:
    """Host reference of the device normalisation: ToTensor (/255) then ImageNet mean/std, float32 NHWC."""
    x = crops_uint8.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
