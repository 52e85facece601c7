"""SFT input pipeline (Grain): records -> tokens with assistant-only labels -> packed (or padded) rows -> batches.

Per sample (`SFTFeaturizer`): decode the record, run the Qwen processor (chat template, image patches), shift
labels by one (`targets[t]` is the token after t; `loss_mask[t]` says whether it was written by the assistant), and
compute the sample's own 3-D mRoPE positions. Samples longer than `seq_len` are dropped or truncated (counted).

Per row: with `packing`, Grain's first-fit packer puts several samples in one row; `segment_ids` (1, 2, ... per
sample, 0 on padding) keep attention inside a sample, and since each sample brought its own positions (starting
at 0), the packed positions are per segment. Image patches are packed alongside into a fixed per-row patch budget
(`patches_per_row`, `images_per_row`), so every batch has static shapes. Without packing, each sample is one row
padded to the smallest of `length_buckets` that fits the batch.

Rows are split over data shards (`vinci_jax.input_pipeline.shards`: each process reads its own shards and
concatenates their batches), and turned into global arrays over the mesh by `make_global_batch`. The Grain
iterator state (`get_state`/`set_state`) is what the checkpoint stores.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from vinci_jax.input_pipeline import sources
from vinci_jax.input_pipeline.global_batch import make_global_batch
from vinci_jax.input_pipeline.shards import ShardIterators, local_shards

PAD_ID = 0
# Fields of a finished batch, with shapes (B rows, L tokens, P patches per row, M images per row, D patch dim).
BATCH_FIELDS: dict[str, str] = {
    "input_ids": "int32 [B, L]",
    "targets": "int32 [B, L] next token (PAD_ID where no loss)",
    "loss_mask": "float32 [B, L] 1 where targets[t] was written by the assistant",
    "segment_ids": "int32 [B, L] sample id within the row, 0 on padding",
    "position_ids": "int32 [3, B, L] per-sample 3-D mRoPE positions",
    "pixel_values": "float32 [B, P, D] each row's image patches, zero padded",
    "image_grid_thw": "int32 [B, M, 3] each row's image grids in token order, zero rows = no image",
}


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    data_dir: str
    split: str = "train"
    family: str = ""  # model family whose processor (chat template, patch size) featurizes; "" = qwen2_5_vl
    seq_len: int = 2048
    batch_size: int = 8  # global rows per step
    packing: bool = True
    patches_per_row: int = 0  # 0: 2 * seq_len (images up to half of a row's tokens; 4 * seq_len is the hard bound)
    images_per_row: int = 8
    length_buckets: tuple[int, ...] = ()  # padding mode; () -> (seq_len,)
    overlong: str = "drop"  # "drop" | "truncate" (truncation never cuts into an image)
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = 1  # None: repeat forever
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    worker_count: int = 0  # Grain worker processes (0: in-process; drop counters are only exact then)
    data_shards: int = 0  # 0: one per process; see vinci_jax.input_pipeline.shards

    def __post_init__(self) -> None:
        if self.overlong not in ("drop", "truncate"):
            raise ValueError(f"SFTConfig.overlong must be 'drop' or 'truncate', got {self.overlong!r}")
        if self.patches_per_row % 4:
            raise ValueError(f"patches_per_row must be a multiple of 4 (merged 2x2 units), got {self.patches_per_row}")
        if any(b > self.seq_len for b in self.length_buckets):
            raise ValueError(f"length_buckets {self.length_buckets} exceed seq_len {self.seq_len}")

    @property
    def row_patches(self) -> int:
        return self.patches_per_row or 2 * self.seq_len

    @property
    def buckets(self) -> tuple[int, ...]:
        return tuple(sorted(self.length_buckets)) or (self.seq_len,)


def default_processor(config: SFTConfig) -> Any:
    """The family's processor (offline tokenizer) with the data config's image area range."""
    from vinci_jax.models.families import get_family

    pixels = {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
    return get_family(config.family or "qwen2_5_vl").processor_with(None, **pixels)


class SFTFeaturizer:
    """Record bytes -> one sample's arrays (or None when it is dropped; the reason is counted in `counts`)."""

    def __init__(self, processor: Any, config: SFTConfig):
        import importlib

        from vinci_jax.models.families import get_family

        self.processor = processor
        self.config = config
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_error = ""  # the most recent unprocessable record's error, for debugging data problems
        module, _, name = get_family(config.family or "qwen2_5_vl").rope_index_path.partition(":")
        self._rope_index = getattr(importlib.import_module(module), name)

    def featurize(self, record: Any) -> dict[str, np.ndarray]:
        """All arrays of one record, untruncated."""
        images = [sources.open_image(b) for b in record.images]
        out = self.processor(record.sft_messages(), images)
        ids = out["input_ids"].astype(np.int32)
        grid = out["image_grid_thw"].astype(np.int64).reshape(-1, 3)
        positions, _ = self._rope_index(
            ids[None],
            grid if len(grid) else None,
            image_token_id=self.processor.image_token_id,
            spatial_merge_size=int(getattr(self.processor.image_processor, "merge_size", 2)),
        )
        mask = out["assistant_mask"].astype(bool)
        return {
            "input_ids": ids,
            "targets": np.concatenate([ids[1:], [PAD_ID]]).astype(np.int32),
            "loss_mask": np.concatenate([mask[1:], [False]]).astype(np.float32),
            "positions": positions[:, 0, :].T.astype(np.int32).copy(),  # [L, 3]: packed along the token axis
            "pixel_values": out["pixel_values"].astype(np.float32),
            "image_grid_thw": grid.astype(np.int32),
            # one byte per patch: lets the packer enforce the row's patch budget without copying the patches
            "patch_slots": np.zeros(len(out["pixel_values"]), np.int8),
        }

    def __call__(self, raw: bytes) -> dict[str, np.ndarray] | None:
        self.counts["seen"] += 1
        try:
            sample = self.featurize(sources.decode(raw))
        except Exception as err:  # a bad record must not stop training; it is counted instead
            self.counts["dropped_unprocessable"] += 1
            self.last_error = f"{type(err).__name__}: {err}"
            return None
        cfg = self.config
        length = len(sample["input_ids"])
        if len(sample["image_grid_thw"]) > cfg.images_per_row or len(sample["pixel_values"]) > cfg.row_patches:
            self.counts["dropped_too_many_patches"] += 1
            return None
        if length > cfg.seq_len:
            image_tokens = np.flatnonzero(sample["input_ids"] == self.processor.image_token_id)
            if cfg.overlong == "drop" or (len(image_tokens) and image_tokens[-1] >= cfg.seq_len - 1):
                self.counts["dropped_overlong"] += 1
                return None
            sample = {k: (v[: cfg.seq_len] if k in _TOKEN_FIELDS else v) for k, v in sample.items()}
            sample["targets"][-1] = PAD_ID
            sample["loss_mask"][-1] = 0.0
            self.counts["truncated"] += 1
        if not sample["loss_mask"].any():
            self.counts["dropped_no_assistant_tokens"] += 1
            return None
        self.counts["kept"] += 1
        return sample


_TOKEN_FIELDS = ("input_ids", "targets", "loss_mask", "positions")


def collate_packed(
    rows: Sequence[Mapping[str, Any]], config: SFTConfig, patch_dim: int = 3 * 2 * 14 * 14
) -> dict[str, np.ndarray]:
    """Packed rows -> the batch layout of BATCH_FIELDS; each row's image patches are written once, in place."""
    dim = next((p.shape[-1] for row in rows for p in row["pixel_values"]), 0) or patch_dim
    pixel_values = np.zeros((len(rows), config.row_patches, dim), np.float32)
    for r, row in enumerate(rows):
        offset = 0
        for patches in row["pixel_values"]:
            pixel_values[r, offset : offset + len(patches)] = patches
            offset += len(patches)
    return {
        "input_ids": np.stack([row["input_ids"] for row in rows]).astype(np.int32, copy=False),
        "targets": np.stack([row["targets"] for row in rows]).astype(np.int32, copy=False),
        "loss_mask": np.stack([row["loss_mask"] for row in rows]).astype(np.float32, copy=False),
        "segment_ids": np.stack([row["input_ids_segment_ids"] for row in rows]).astype(np.int32, copy=False),
        "position_ids": np.ascontiguousarray(np.stack([row["positions"] for row in rows]).transpose(2, 0, 1)),
        "pixel_values": pixel_values,
        "image_grid_thw": np.stack([row["image_grid_thw"] for row in rows]).astype(np.int32, copy=False),
    }


def pad_batch(samples: Sequence[Mapping[str, np.ndarray]], config: SFTConfig) -> dict[str, np.ndarray]:
    """One sample per row, padded to the smallest length bucket that fits the longest sample."""
    longest = max(len(s["input_ids"]) for s in samples)
    length = next(b for b in config.buckets + (config.seq_len,) if b >= longest)
    rows, patches, images = len(samples), config.row_patches, config.images_per_row
    dim = samples[0]["pixel_values"].shape[-1]
    out = {
        "input_ids": np.full((rows, length), PAD_ID, np.int32),
        "targets": np.full((rows, length), PAD_ID, np.int32),
        "loss_mask": np.zeros((rows, length), np.float32),
        "segment_ids": np.zeros((rows, length), np.int32),
        "position_ids": np.zeros((3, rows, length), np.int32),
        "pixel_values": np.zeros((rows, patches, dim), np.float32),
        "image_grid_thw": np.zeros((rows, images, 3), np.int32),
    }
    for r, s in enumerate(samples):
        n = len(s["input_ids"])
        out["input_ids"][r, :n] = s["input_ids"]
        out["targets"][r, :n] = s["targets"]
        out["loss_mask"][r, :n] = s["loss_mask"]
        out["segment_ids"][r, :n] = 1
        out["position_ids"][:, r, :n] = s["positions"].T
        out["pixel_values"][r, : len(s["pixel_values"])] = s["pixel_values"]
        out["image_grid_thw"][r, : len(s["image_grid_thw"])] = s["image_grid_thw"]
    return out


def local_rows(global_rows: int) -> int:
    count = jax.process_count()
    if global_rows % count:
        raise ValueError(f"batch_size {global_rows} does not divide over {count} processes")
    return global_rows // count


def build_sft_dataset(
    config: SFTConfig, processor: Any = None, featurizer: SFTFeaturizer | None = None, shard: int | None = None
) -> tuple[grain.IterDataset, SFTFeaturizer]:
    """The Grain dataset of one data shard's batches (numpy dicts in the BATCH_FIELDS layout, batch_size/S rows)
    and its featurizer. `shard` defaults to this process's first shard."""
    featurizer = featurizer or SFTFeaturizer(processor or default_processor(config), config)
    mine, count = local_shards(config.data_shards, config.batch_size)
    shard = mine[0] if shard is None else shard
    rows = config.batch_size // count
    patch_dim = int(getattr(getattr(featurizer.processor, "image_processor", None), "patch_dim", 3 * 2 * 14 * 14))
    ds = grain.MapDataset.source(sources.array_record_source(config.data_dir, config.split))
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds[shard::count]
    ds = ds.repeat(config.num_epochs)
    ds = ds.map(featurizer).filter(lambda sample: sample is not None)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if config.packing:
        length = config.seq_len
        iter_ds = grain.experimental.FirstFitPackIterDataset(
            iter_ds,
            length_struct={
                "input_ids": length,
                "targets": length,
                "loss_mask": length,
                "positions": length,
                "patch_slots": config.row_patches,
                "image_grid_thw": config.images_per_row,
            },
            num_packing_bins=rows,
            shuffle_bins=False,
            # pixel_values is not in length_struct: the packer hands each row the list of its samples' patches
            meta_features=("targets", "loss_mask", "positions", "patch_slots", "image_grid_thw", "pixel_values"),
        )
        iter_ds = iter_ds.batch(
            rows, drop_remainder=True, batch_fn=lambda packed: collate_packed(packed, config, patch_dim)
        )
    else:
        iter_ds = iter_ds.batch(rows, drop_remainder=True, batch_fn=lambda samples: pad_batch(samples, config))
    if config.worker_count:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain workers read absl flags; outside an absl app use their defaults
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count))
    return iter_ds, featurizer


def concat_batches(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Shard batches -> one process batch, rows in shard order (position_ids are [3, B, L]); padding-mode batches of
    different length buckets are right-padded to the longest."""
    if len(batches) == 1:
        return dict(batches[0])
    out = {}
    for key in batches[0]:
        axis = 1 if key == "position_ids" else 0
        parts = [np.asarray(b[key]) for b in batches]
        if key in ("input_ids", "targets", "loss_mask", "segment_ids", "position_ids"):
            width = max(p.shape[-1] for p in parts)
            parts = [np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, width - p.shape[-1])]) for p in parts]
        out[key] = np.concatenate(parts, axis=axis)
    return out


class SFTLoader:
    """Iterator of SFT batches: numpy dicts, or global jax.Arrays over `mesh` when one is given.

    A process reading several data shards (`SFTConfig.data_shards`) concatenates their batches in shard order.
    `get_state()` / `set_state()` save and restore the position (Grain iterator state, a small dict; one per local
    shard) so training resumes on the exact next batch.
    """

    def __init__(self, config: SFTConfig, processor: Any = None, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.mesh = mesh
        shards = local_shards(config.data_shards, config.batch_size)[0]
        first, self.featurizer = build_sft_dataset(config, processor, shard=shards[0])
        self.datasets = [first] + [build_sft_dataset(config, featurizer=self.featurizer, shard=s)[0]
                                   for s in shards[1:]]  # fmt: skip
        self.streams = ShardIterators(shards, [iter(ds) for ds in self.datasets])

    def __iter__(self) -> SFTLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = concat_batches(self.streams.next_all())
        return batch if self.mesh is None else make_global_batch(batch, self.mesh)

    def get_state(self) -> dict[str, Any]:
        return self.streams.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.streams.set_state(state)

    @property
    def counts(self) -> dict[str, int]:
        """Samples seen / kept / dropped (by reason) / truncated in this process."""
        return dict(self.featurizer.counts)


def images_of_rows(image_grid_thw: np.ndarray, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(grids [n, 3], patches [sum, D]) of these batch rows' images in row-major token order (the order in which the
    model splices image features into the token sequence), or None when the rows hold no image."""
    grids, patches = [], []
    for row_grids, row_pixels in zip(np.asarray(image_grid_thw), np.asarray(pixel_values), strict=True):
        offset = 0
        for grid in row_grids:
            n = int(np.prod(grid))
            if n:
                grids.append(grid)
                patches.append(row_pixels[offset : offset + n])
                offset += n
    if not grids:
        return None
    return np.stack(grids).astype(np.int64), np.concatenate(patches)


def vision_inputs_for_batch(batch: Mapping[str, np.ndarray], vision_config: Any, **layout: Any) -> Any:
    """The model's VisionInputs for a host batch as one block (every row's real patches, in token order); `layout`
    goes to `prepare_vision_inputs` (bucket_sizes, row_patches, row_buckets). None for a batch without images."""
    from vinci_jax.models.qwen2_5_vl.vision_inputs import prepare_vision_inputs

    images = images_of_rows(batch["image_grid_thw"], batch["pixel_values"])
    return None if images is None else prepare_vision_inputs(*images, vision_config, **layout)
