"""The vinci-jax corpora (converted VinciCoder files, the synthetic corpus) as a TFDS dataset, without TensorFlow.

`VinciCoder` ("vinci_coder") reads a dataset directory written by `convert` or `build-synth` and writes TFDS's
ArrayRecord layout with its metadata, so `tfds.builder("vinci_coder/<config>", data_dir=...).info` and
`tfds.data_source(...)` work and the Grain pipelines read through that data source
(`vinci_jax.input_pipeline.sources`). Configs: `all`, and one per domain and task (`chart-generate`,
`svg-refine`, ...); splits: whichever of train / val / test have records.

Each example keeps the msgpack `Record` (schema v1, images inline as encoded bytes: TFDS's Image feature would need
TensorFlow) under `record`, beside a few plain fields for filtering and inspection.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vinci_data.records import DOMAINS, SPLITS, TASKS, decode_record, list_shards

NAME = "vinci_coder"
FILE_FORMAT = "array_record"


@dataclasses.dataclass
class VinciCoderConfig(tfds.core.BuilderConfig):
    """One slice of the corpus: a domain and a task, or everything (None)."""

    domain: str | None = None
    task: str | None = None

    def matches(self, domain: str, task: str) -> bool:
        return (self.domain is None or self.domain == domain) and (self.task is None or self.task == task)


def _configs() -> list[VinciCoderConfig]:
    configs = [VinciCoderConfig(name="all", description="every domain and task")]
    for domain in DOMAINS:
        for task in TASKS:
            configs.append(VinciCoderConfig(name=f"{domain}-{task}", description=f"{domain} {task}", domain=domain,
                                            task=task))  # fmt: skip
    return configs


def _raw_records(source_dir: str, split: str) -> Iterator[tuple[int, bytes]]:
    from array_record.python.array_record_module import ArrayRecordReader

    index = 0
    for path in list_shards(source_dir, split):
        reader = ArrayRecordReader(path)
        try:
            for i in range(reader.num_records()):
                yield index, reader.read([i])[0]
                index += 1
        finally:
            reader.close()


class VinciCoder(tfds.core.GeneratorBasedBuilder):
    """Picture -> code examples (SFT messages and/or RL problem + gold answer) of the five VinciCoder domains."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "msgpack Record schema v1 under `record`; id/domain/task/language/split beside it."}
    BUILDER_CONFIGS = _configs()

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs: Any):
        self._source_dir = os.fspath(source_dir) if source_dir is not None else None
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "record": tfds.features.Tensor(shape=(), dtype=np.object_),  # msgpack Record bytes
                    "id": text,
                    "domain": text,
                    "task": text,
                    "language": text,
                }
            ),
            homepage="https://github.com/DocTron-hub/VinciCoder",
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        if self._source_dir is None:
            raise ValueError("VinciCoder needs source_dir= (a dataset dir written by convert or build-synth) to build")
        splits = {split: self._generate_examples(split) for split in self.splits_with_records()}
        if not splits:
            raise ValueError(f"{self._source_dir} has no records for config {self.builder_config.name!r}")
        return splits

    def splits_with_records(self) -> list[str]:
        config = self.builder_config
        out = []
        for split in SPLITS:
            for _, raw in _raw_records(self._source_dir, split):
                record = decode_record(raw)
                if config.matches(record.domain, record.task):
                    out.append(split)
                    break
        return out

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        config = self.builder_config
        for index, raw in _raw_records(self._source_dir, split):
            record = decode_record(raw)
            if config.matches(record.domain, record.task):
                yield f"{split}-{index:09d}", {
                    "record": raw, "id": record.id, "domain": record.domain, "task": record.task,
                    "language": record.language,
                }  # fmt: skip


def build_tfds(
    source_dir: str | os.PathLike, data_dir: str | os.PathLike, configs: Sequence[str] | None = None
) -> dict[str, Any]:
    """Prepare the TFDS configs (default: every config with records) of `source_dir` under `data_dir`."""
    source_dir, data_dir = os.fspath(source_dir), os.fspath(data_dir)
    names = list(configs) if configs else [c.name for c in VinciCoder.BUILDER_CONFIGS]
    built: dict[str, Any] = {}
    for name in names:
        builder = VinciCoder(config=name, data_dir=data_dir, source_dir=source_dir)
        if configs is None and name != "all" and not builder.splits_with_records():
            continue  # the default set skips empty slices; a named one fails loudly in _split_generators
        builder.download_and_prepare()
        built[name] = {
            "dir": os.fspath(builder.data_dir),
            "splits": {split: info.num_examples for split, info in builder.info.splits.items()},
        }
    return {"name": NAME, "data_dir": data_dir, "configs": built}


def is_tfds_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is one prepared TFDS dataset version dir (holds dataset_info.json and features.json)."""
    from etils import epath

    root = epath.Path(path)
    return (root / "dataset_info.json").exists() and (root / "features.json").exists()


def data_source(path: str | os.PathLike, split: str) -> Any:
    """`tfds` data source of `split` of the prepared dataset at `path` (a version dir); raises KeyError naming the
    splits it has when `split` is not one of them."""
    builder = tfds.builder_from_directory(os.fspath(path))
    if split not in builder.info.splits:
        raise KeyError(f"split {split!r} not in {os.fspath(path)} (it has {sorted(builder.info.splits)})")
    return builder.as_data_source(split=split)


def tfds_splits(path: str | os.PathLike) -> list[str]:
    return sorted(tfds.builder_from_directory(os.fspath(path)).info.splits)
