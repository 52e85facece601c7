"""Glue from the Grain SFT pipeline (`vinci_jax.input_pipeline`) to the trainer: config -> iterators whose batches
carry the model's `vision_inputs` in a fixed patch bucket (so image sizes do not recompile the step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

# Batch fields that only exist to build vision_inputs; the model gets vision_inputs instead.
_VISION_FIELDS = ("pixel_values", "image_grid_thw")


class VisionBatches:
    """Wraps an SFT loader: replaces each batch's per-row patches by the model's bucketed `VisionInputs`.

    `get_state`/`set_state` are the loader's, so checkpoints store the Grain position.
    """

    def __init__(self, loader: Any, vision_config: Any, patch_bucket: int):
        self.loader, self.vision_config, self.patch_bucket = loader, vision_config, patch_bucket

    def __iter__(self) -> VisionBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        from vinci_jax.input_pipeline import vision_inputs_for_batch

        batch = dict(next(self.loader))
        vision = None
        if np.asarray(batch["image_grid_thw"]).any():
            vision = vision_inputs_for_batch(
                batch, self.vision_config, bucket_sizes=(self.patch_bucket, 2 * self.patch_bucket)
            )
        for key in _VISION_FIELDS:
            batch.pop(key, None)
        if vision is not None:
            batch["vision_inputs"] = vision
        return batch

    def get_state(self) -> Any:
        return self.loader.get_state()

    def set_state(self, state: Any) -> None:
        self.loader.set_state(state)


def _sft_config(config: ml_collections.ConfigDict, path: str, split: str, seed: int, shuffle: bool) -> Any:
    from vinci_jax.input_pipeline import SFTConfig
    from vinci_jax.train.model import model_family

    data = config.data
    if not path or not Path(path).exists():
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
    )


def make_grain_iterators(
    config: ml_collections.ConfigDict, seed: int, vision_config: Any
) -> tuple[VisionBatches, Callable[[], Iterator[dict[str, Any]]] | None]:
    """Train iterator (shuffled, repeating) and a factory of fresh validation iterators (same rows every time)."""
    from vinci_jax.input_pipeline import SFTLoader

    data = config.data
    train_cfg = _sft_config(config, data.train_path, data.train_split, seed, shuffle=True)
    rows = max(data.global_batch_size // max(_process_count(), 1), 1)
    bucket = train_cfg.row_patches * rows
    train = VisionBatches(SFTLoader(train_cfg), vision_config, bucket)
    make_val = None
    from vinci_data.records import list_shards

    val_path = data.val_path or data.train_path
    if data.val_split and not list_shards(val_path, data.val_split):
        logging.warning("no %r split in %s: validation disabled", data.val_split, val_path)
    elif data.val_split:
        val_cfg = _sft_config(config, val_path, data.val_split, seed, shuffle=False)
        processor = train.loader.featurizer.processor  # one tokenizer for both: building it is not free
        make_val = lambda: VisionBatches(SFTLoader(val_cfg, processor), vision_config, bucket)  # noqa: E731
    return train, make_val


def _process_count() -> int:
    import jax

    return jax.process_count()
