"""Grain data sources over vinci_data ArrayRecord shards, decoding to `vinci_data.Record`s."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import grain
import numpy as np
from PIL import Image
from vinci_data.records import Record, decode_record, list_shards


def shard_paths(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The ArrayRecord shards of `split`; raises naming the directory when there are none."""
    paths = list_shards(data_dir, split)
    if not paths:
        raise FileNotFoundError(
            f"no '{split}-*.array_record' shards in {os.fspath(data_dir)!r}; build them with "
            "`python -m vinci_jax.data build-synth --out DIR` or `... convert --sft PARQUET --out DIR`"
        )
    return paths


def array_record_source(data_dir: str | os.PathLike, split: str) -> grain.sources.ArrayRecordDataSource:
    return grain.sources.ArrayRecordDataSource(shard_paths(data_dir, split))


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
