"""Glue from the Grain SFT pipeline (`vinci_jax.input_pipeline`) to the trainer: config -> iterators whose batches
carry the model's `vision_inputs`, one block per data-parallel shard, in agreed bucketed shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from vinci_jax.paths import as_path


class VisionBatches:
    """Wraps an SFT loader: replaces each batch's per-row patches by the model's `VisionInputs`.

    With a mesh, the images are grouped per data-parallel shard of the batch (`VisionInputs.groups`): each shard's
    rows get their own block of vision rows, so the tower runs data-parallel and no process needs another process's
    pixels. Blocks share one shape, agreed over shards and processes every batch: vision rows of `row_patches`
    (or the next power-of-two multiple of the window slot that holds the largest image), a power-of-two row count.
    `get_state`/`set_state` are the loader's, so checkpoints store the Grain position.
    """

    def __init__(self, loader: Any, vision_config: Any, row_patches: int, mesh: Any = None):
        self.loader, self.vision_config, self.mesh = loader, vision_config, mesh
        from vinci_jax.models.vision_inputs import window_slot_patches

        self.slot = window_slot_patches(vision_config)
        self.row_patches = -(-int(row_patches) // self.slot) * self.slot

    def __iter__(self) -> VisionBatches:
        return self

    def local_groups(self, local_rows: int) -> int:
        """Vision groups this process builds: its share of the batch dim's shards (1 without a mesh)."""
        import jax

        if self.mesh is None:
            return 1
        from vinci_jax import sharding

        processes = jax.process_count()
        spec = sharding.logical_to_spec(("batch",), (local_rows * processes,), self.mesh)
        axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()
        shards = int(np.prod([self.mesh.shape[a] for a in axes], dtype=np.int64))
        if shards % processes:
            raise ValueError(
                f"the batch splits into {shards} shards over {processes} processes; use a batch size and mesh whose "
                "data-parallel shards divide over the processes"
            )
        return shards // processes

    def __next__(self) -> dict[str, Any]:
        import dataclasses

        import jax

        from vinci_jax import multihost
        from vinci_jax.input_pipeline.sft import images_of_rows
        from vinci_jax.models import vision_inputs as vi

        batch = dict(next(self.loader))
        grids, pixels = np.asarray(batch.pop("image_grid_thw")), np.asarray(batch.pop("pixel_values"))
        groups = self.local_groups(len(grids))
        per = len(grids) // groups
        blocks = [images_of_rows(grids[g * per : (g + 1) * per], pixels[g * per : (g + 1) * per])
                  for g in range(groups)]  # fmt: skip
        block_sizes = [vi.image_slot_patches(b[0], self.vision_config) for b in blocks if b is not None]
        largest = max((max(sizes) for sizes in block_sizes), default=0)
        length = self.row_patches
        while length < largest:
            length *= 2
        rows = max((vi.rows_needed(sizes, length) for sizes in block_sizes), default=0)
        length, rows, any_images = multihost.max_over_processes([length, rows, int(bool(block_sizes))])
        if not any_images:
            return batch
        rows = 1 << (rows - 1).bit_length()  # a power of two: few distinct shapes, few recompiles
        vision = vi.grouped_vision_inputs(
            blocks, self.vision_config, row_patches=length, rows=rows, patch_dim=pixels.shape[-1]
        )
        batch["vision_inputs"] = dataclasses.replace(vision, groups=groups * jax.process_count())
        return batch

    def get_state(self) -> Any:
        return self.loader.get_state()

    def set_state(self, state: Any) -> None:
        self.loader.set_state(state)


def _sft_config(config: ml_collections.ConfigDict, path: str, split: str, seed: int, shuffle: bool) -> Any:
    from vinci_jax.input_pipeline import SFTConfig
    from vinci_jax.train.model import model_family

    data = config.data
    if not path or not as_path(path).exists():
        raise FileNotFoundError(
            f"SFT data directory {path!r} (config.data.train_path / val_path) does not exist; build the synthetic "
            "corpus with `python -m vinci_jax.data build-synth --out DIR --size 200` and pass "
            "--config.data.train_path=DIR, or use --config.data.source=synthetic (text-only stand-in data)"
        )
    return SFTConfig(
        data_dir=path,
        split=split,
        family=model_family(config.model).name,
        seq_len=data.seq_len,
        batch_size=data.global_batch_size,
        packing=data.packing,
        overlong=data.overlong,
        patches_per_row=data.patches_per_row,
        images_per_row=data.images_per_row,
        shuffle=shuffle,
        seed=seed,
        num_epochs=None,  # repeat: the step count decides when training ends
        min_pixels=data.min_pixels,
        max_pixels=data.max_pixels,
        worker_count=data.num_workers,
        data_shards=int(data.get("data_shards", 0)),
    )


def make_grain_iterators(
    config: ml_collections.ConfigDict, seed: int, vision_config: Any, mesh: Any = None
) -> tuple[VisionBatches, Callable[[], Iterator[dict[str, Any]]] | None]:
    """Train iterator (shuffled, repeating) and a factory of fresh validation iterators (same rows every time)."""
    from vinci_jax.input_pipeline import SFTLoader
    from vinci_jax.train.model import model_processor

    data = config.data
    train_cfg = _sft_config(config, data.train_path, data.train_split, seed, shuffle=True)
    row_patches = train_cfg.row_patches
    # the model's own tokenizer when its hf_dir / init_from has one (what the workdir's processor files then hold)
    processor = model_processor(config.model, min_pixels=data.min_pixels, max_pixels=data.max_pixels)
    train = VisionBatches(SFTLoader(train_cfg, processor), vision_config, row_patches, mesh)
    make_val = None
    from vinci_data.records import list_shards

    val_path = data.val_path or data.train_path
    if data.val_split and not list_shards(val_path, data.val_split):
        logging.warning("no %r split in %s: validation disabled", data.val_split, val_path)
    elif data.val_split:
        val_cfg = _sft_config(config, val_path, data.val_split, seed, shuffle=False)
        make_val = lambda: VisionBatches(SFTLoader(val_cfg, processor), vision_config, row_patches, mesh)  # noqa: E731
    return train, make_val
