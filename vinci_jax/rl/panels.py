"""Image panels for people: each prompt's target beside its rendered rollouts, labelled with their rewards."""

from __future__ import annotations

from typing import Any

import numpy as np
from etils import epath
from PIL import Image, ImageDraw

from vinci_jax.paths import as_path

THUMB = 160


def _thumb(image: Image.Image | None, label: str) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB + 18), "white")
    if image is None:
        ImageDraw.Draw(tile).rectangle([4, 4, THUMB - 4, THUMB - 4], outline=(200, 0, 0), width=3)
    else:
        copy = image.convert("RGB").copy()
        copy.thumbnail((THUMB, THUMB))
        tile.paste(copy, ((THUMB - copy.width) // 2, (THUMB - copy.height) // 2))
    ImageDraw.Draw(tile).text((4, THUMB + 3), label, fill=(0, 0, 0))
    return tile


def panel(batch: Any, rollouts: Any, max_prompts: int = 4) -> Image.Image:
    """Rows: prompt i's target, then its rollouts' renders (red frame: nothing rendered) with reward and status."""
    targets = batch.target_images()
    rows = []
    for prompt in range(min(max_prompts, len(targets))):
        tiles = [_thumb(targets[prompt], f"target {batch.domains[prompt]}")]
        for row in np.flatnonzero(rollouts.prompt_of_row == prompt):
            result = rollouts.render_results[row]
            image = result.image() if result is not None and result.ok else None
            tiles.append(_thumb(image, f"r={rollouts.rewards[row]:.2f} {rollouts.statuses[row][:10]}"))
        rows.append(tiles)
    width = max(len(r) for r in rows) * THUMB
    sheet = Image.new("RGB", (width, len(rows) * (THUMB + 18)), (235, 235, 235))
    for y, tiles in enumerate(rows):
        for x, tile in enumerate(tiles):
            sheet.paste(tile, (x * THUMB, y * (THUMB + 18)))
    return sheet


def write_panel(path: epath.PathLike, batch: Any, rollouts: Any, metrics: Any = None, step: int = 0) -> epath.Path:
    """The panel as a PNG at `path` and, given a MetricsWriter, as the TensorBoard image `panels` at `step`."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = panel(batch, rollouts)
    with path.open("wb") as f:  # PIL's own open() would not reach a bucket
        image.save(f, format="PNG")
    if metrics is not None:
        metrics.write_image(step, "panels", image)
    return path
