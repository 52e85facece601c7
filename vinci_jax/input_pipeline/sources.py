"""Grain data sources over vinci_data datasets, decoding to `vinci_data.Record`s.

`data_dir` is either a dataset dir written by `build-synth` / `convert` (its ArrayRecord shards are read directly)
or a prepared TFDS dataset version dir (`python -m vinci_jax.data tfds`, read through `tfds` data sources); both
may be local or `gs://`. A held-out split that a dataset lacks (e.g. `test` after a conversion without
--test-fraction) falls back, with a logged warning, to another held-out split and then to `train`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
from absl import logging
from PIL import Image
from vinci_data.records import SPLITS, Record, decode_record, list_shards

HELD_OUT_FALLBACKS: dict[str, tuple[str, ...]] = {"test": ("val", "train"), "val": ("test", "train")}


def _tfds_dir(data_dir: str | os.PathLike) -> bool:
    """A prepared TFDS version dir (checked without importing tensorflow_datasets)."""
    from etils import epath

    root = epath.Path(data_dir)
    return (root / "dataset_info.json").exists() and (root / "features.json").exists()


def available_splits(data_dir: str | os.PathLike) -> list[str]:
    """The splits of `data_dir` that hold records."""
    if _tfds_dir(data_dir):
        from vinci_data.tfds_builder import tfds_splits

        return tfds_splits(data_dir)
    return [split for split in SPLITS if list_shards(data_dir, split)]


def resolve_split(data_dir: str | os.PathLike, split: str) -> str:
    """`split` when `data_dir` has it, else a held-out fallback (logged); raises naming the dir when none fits."""
    available = available_splits(data_dir)
    if split in available or (not _tfds_dir(data_dir) and list_shards(data_dir, split)):
        return split  # a standard split, or another one written beside them (e.g. the demo's `heldout`)
    for fallback in HELD_OUT_FALLBACKS.get(split, ()):
        if fallback in available:
            logging.warning("split %r is not in %s (it has %s): using %r instead", split, os.fspath(data_dir),
                            available, fallback)  # fmt: skip
            return fallback
    raise FileNotFoundError(
        f"no '{split}' records in {os.fspath(data_dir)!r} (splits there: {available}); build them with "
        "`python -m vinci_jax.data build-synth --out DIR` or `... convert FILE.parquet --out DIR`"
    )


def shard_paths(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The ArrayRecord shards of `split` (or its held-out fallback); raises naming the directory when there are none."""
    return list_shards(data_dir, resolve_split(data_dir, split))


class TfdsRecordSource(grain.sources.RandomAccessDataSource):
    """A prepared TFDS dataset's split as raw msgpack Record bytes (its examples' `record` feature)."""

    def __init__(self, data_dir: str | os.PathLike, split: str):
        from vinci_data.tfds_builder import data_source

        self._data_dir, self._split = os.fspath(data_dir), split
        self._source = data_source(data_dir, split)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> bytes:
        return self._source[int(index)]["record"]

    def __iter__(self) -> Iterator[bytes]:
        for index in range(len(self)):
            yield self[index]

    def __getitems__(self, indices: Sequence[int]) -> list[bytes]:
        return [example["record"] for example in self._source.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return f"TfdsRecordSource({self._data_dir!r}, {self._split!r}, {len(self)} records)"


def array_record_source(data_dir: str | os.PathLike, split: str) -> Any:
    """The records of `split` as a random-access source of msgpack bytes (shards, or a TFDS dataset)."""
    split = resolve_split(data_dir, split)
    if _tfds_dir(data_dir):
        return TfdsRecordSource(data_dir, split)
    return grain.sources.ArrayRecordDataSource(list_shards(data_dir, split))


def decode(raw: bytes) -> Record:
    return decode_record(raw)


def open_image(data: bytes) -> Image.Image:
    """Decoded RGB image (transparent pixels on white, as the renderers and the reward see them)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


class IndexedSource(grain.sources.RandomAccessDataSource):
    """A view of `source` holding only `indices` (e.g. one domain), still random access for Grain."""

    def __init__(self, source: grain.sources.RandomAccessDataSource, indices: Sequence[int]):
        self._source = source
        self._indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> bytes:
        return self._source[int(self._indices[index])]

    def __repr__(self) -> str:
        return f"IndexedSource({len(self)} of {self._source!r})"


def domain_indices(source: grain.sources.RandomAccessDataSource) -> dict[str, list[int]]:
    """Record indices per domain (one pass over the source; RL sets are small, ~42k prompts)."""
    out: dict[str, list[int]] = {}
    for i in range(len(source)):
        out.setdefault(decode_record(source[i]).domain, []).append(i)
    return out
