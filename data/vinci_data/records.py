"""The one record schema of vinci-jax datasets and its ArrayRecord storage.

A record is a msgpack map with image bytes inline, so one ArrayRecord entry is self-contained (no side files to lose
when shards move between hosts). Both SFT pairs (ms-swift `messages`) and RL prompts (EasyR1 `problem`/`answer`)
fit: SFT records carry `messages`; RL records carry `problem` and `answer`; synthetic records carry all three, so the
same shards feed both stages.

Shard layout of a dataset directory:
    DIR/stats.json
    DIR/<split>-<i:05d>-of-<n:05d>.array_record
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

DOMAINS: tuple[str, ...] = ("chart", "svg", "web", "tikz", "chem", "other")
TASKS: tuple[str, ...] = ("generate", "refine")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SCHEMA_VERSION = 1
# group_size 1 keeps random access cheap (Grain reads single records by index).
ARRAY_RECORD_OPTIONS = "group_size:1"


@dataclasses.dataclass
class Record:
    """One image -> code example.

    messages: ms-swift style [{"role", "content"}] with one "<image>" placeholder per entry of `images`.
    problem/answer: EasyR1 RL prompt (with "<image>") and gold code; `answer` is what the reward's target renders.
    images: encoded image bytes (PNG for synthetic data; the original encoding for converted data).
    target: index into `images` of the picture the code must reproduce (the reward's target image).
    """

    id: str
    domain: str
    task: str
    language: str
    images: list[bytes]
    messages: list[dict[str, str]] = dataclasses.field(default_factory=list)
    problem: str = ""
    answer: str = ""
    split: str = "train"
    difficulty: int = 0
    target: int = 0
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def prompt(self) -> str:
        """The user turn the model sees (RL problem, else the last user message)."""
        if self.problem:
            return self.problem
        users = [m["content"] for m in self.messages if m.get("role") == "user"]
        if not users:
            raise ValueError(f"record {self.id!r} has neither `problem` nor a user message")
        return users[-1]

    def target_image(self) -> bytes:
        return self.images[self.target]

    def sft_messages(self) -> list[dict[str, str]]:
        """Messages for SFT; RL-only records become user=problem, assistant=fenced answer."""
        if self.messages:
            return self.messages
        fenced = f"```{self.language}\n{self.answer.rstrip()}\n```"
        return [{"role": "user", "content": self.problem}, {"role": "assistant", "content": fenced}]


def encode_record(record: Record) -> bytes:
    """Deterministic bytes for `record` (sorted keys), so identical inputs give byte-identical shards."""
    payload = dataclasses.asdict(record)
    payload["v"] = SCHEMA_VERSION
    return msgpack.packb(_sorted(payload), use_bin_type=True)


def decode_record(data: bytes) -> Record:
    payload = msgpack.unpackb(data, raw=False)
    version = payload.pop("v", None)
    if version != SCHEMA_VERSION:
        raise ValueError(f"record schema version {version} is not {SCHEMA_VERSION}; rebuild the dataset")
    return Record(**payload)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def list_shards(directory: str | os.PathLike, split: str = "train") -> list[str]:
    """The ArrayRecord shards of `split` in `directory` (a local dir or a `gs://` prefix), in order."""
    from etils import epath

    root = epath.Path(directory)
    if not root.is_dir():
        return []
    return sorted(os.fspath(p) for p in root.glob(f"{split}-*-of-*.array_record"))


class RecordWriter:
    """Writes records of each split round-robin into `num_shards` ArrayRecord files per split.

    Opening a writer on a directory removes the shards already there (a dataset directory holds one build).
    """

    def __init__(self, directory: str | os.PathLike, num_shards: int = 1):
        from array_record.python.array_record_module import ArrayRecordWriter

        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._directory = os.fspath(directory)
        os.makedirs(self._directory, exist_ok=True)
        # a rebuild replaces the whole dataset: shards of an older build (other splits or shard counts) must go
        for stale in glob.glob(os.path.join(self._directory, "*-*-of-*.array_record")):
            os.remove(stale)
        self._num_shards = num_shards
        self._writer_cls = ArrayRecordWriter
        self._writers: dict[str, list[Any]] = {}
        self._counts: dict[str, int] = {}

    def write(self, record: Record) -> None:
        if record.split not in self._writers:
            self._writers[record.split] = [
                self._writer_cls(
                    os.path.join(self._directory, shard_name(record.split, i, self._num_shards)),
                    ARRAY_RECORD_OPTIONS,
                )
                for i in range(self._num_shards)
            ]
            self._counts[record.split] = 0
        index = self._counts[record.split]
        self._writers[record.split][index % self._num_shards].write(encode_record(record))
        self._counts[record.split] = index + 1

    def close(self) -> None:
        for writers in self._writers.values():
            for writer in writers:
                writer.close()
        self._writers = {}

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(paths: str | os.PathLike | Sequence[str], split: str = "train") -> Iterator[Record]:
    """All records of a dataset directory's split (or of explicit shard paths), in storage order."""
    from array_record.python.array_record_module import ArrayRecordReader

    if isinstance(paths, str | os.PathLike):
        shard_paths = list_shards(paths, split)
    else:
        shard_paths = list(paths)
    for path in shard_paths:
        reader = ArrayRecordReader(path)
        try:
            for i in range(reader.num_records()):
                yield decode_record(reader.read([i])[0])
        finally:
            reader.close()


def write_stats(directory: str | os.PathLike, stats: dict[str, Any]) -> str:
    from etils import epath

    path = epath.Path(directory) / "stats.json"
    path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return os.fspath(path)


def read_stats(directory: str | os.PathLike) -> dict[str, Any]:
    from etils import epath

    return json.loads((epath.Path(directory) / "stats.json").read_text())
