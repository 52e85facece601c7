"""RL (ViRL) input pipeline (Grain): prompts with images, group ids and the target image kept on the host.

Each element is one prompt: the processor's outputs for the user turn with the generation header appended
(`input_ids`, `pixel_values`, `image_grid_thw`), and host-side fields the reward needs (target image PNG bytes, gold
code, language, domain). `group_id` is unique over the whole run (all hosts): the sampler draws n rollouts per prompt
and the advantage is computed within a group. Domains are mixed by weight ("balanced", "natural" or a mapping);
weighted mixing repeats domains forever (stop by steps), natural order honours `num_epochs`.

Batches are lists of prompts (`RLBatch`); `vinci_jax.sampling.prompts.make_prompt_batch` turns one into padded,
bucketed device inputs, so prompt padding stays the sampler's decision.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from vinci_jax.input_pipeline import sources
from vinci_jax.input_pipeline.shards import ShardIterators, local_shards


@dataclasses.dataclass(frozen=True)
class RLConfig:
    data_dir: str
    split: str = "train"
    family: str = ""  # model family of the default processor (chat template, patch size); "" = qwen2_5_vl
    prompts_per_batch: int = 8  # global prompts per step (each sampled n times by the sampler)
    max_prompt_len: int = 6144
    domain_weights: str | Mapping[str, float] = "natural"  # "natural" | "balanced" | {domain: weight}
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = 1  # natural weights only; None: forever
    min_pixels: int = 512 * 512  # the released run's policy image area range
    max_pixels: int = 2048 * 2048
    data_shards: int = 0  # 0: one per process; see vinci_jax.input_pipeline.shards

    def __post_init__(self) -> None:
        if isinstance(self.domain_weights, str) and self.domain_weights not in ("natural", "balanced"):
            raise ValueError(
                "domain_weights must be 'natural', 'balanced' or a {domain: weight} mapping, "
                f"got {self.domain_weights!r}"
            )


@dataclasses.dataclass
class RLBatch:
    """Prompts of one step (host side); `prompts[i]` has input_ids, pixel_values, image_grid_thw (numpy)."""

    prompts: list[dict[str, np.ndarray]]
    group_ids: np.ndarray  # int64 [B], unique across hosts and steps
    ids: list[str]
    domains: list[str]
    languages: list[str]
    prompt_texts: list[str]
    answers: list[str]
    target_pngs: list[bytes]  # what the reward compares renders against

    def __len__(self) -> int:
        return len(self.prompts)

    def target_images(self) -> list[Any]:
        return [sources.open_image(png) for png in self.target_pngs]

    @classmethod
    def concat(cls, batches: Sequence[RLBatch]) -> RLBatch:
        """One batch with the prompts of `batches` in order (data shards of a process, or all processes')."""
        if len(batches) == 1:
            return batches[0]
        fields = {f.name: [] for f in dataclasses.fields(cls)}
        for batch in batches:
            for name in fields:
                fields[name].extend(list(getattr(batch, name)))
        fields["group_ids"] = np.asarray(fields["group_ids"], np.int64)
        return cls(**fields)

    def prompt_batch(self, model_config: Any, pad_token_id: int, **kwargs: Any) -> Any:
        """Left-padded, bucketed device inputs for the sampler (`make_prompt_batch`)."""
        from vinci_jax.sampling.prompts import make_prompt_batch

        return make_prompt_batch(self.prompts, model_config, pad_token_id, **kwargs)


class RLFeaturizer:
    """(index, record bytes) -> one prompt element, or None when dropped (counted in `counts`)."""

    def __init__(self, processor: Any, config: RLConfig, shard: int = 0, shards: int = 1):
        self.processor = processor
        self.config = config
        self.counts: collections.Counter[str] = collections.Counter()
        self._shard, self._shards = shard, shards

    def __call__(self, index: int, raw: bytes) -> dict[str, Any] | None:
        self.counts["seen"] += 1
        try:
            record = sources.decode(raw)
            prompt = record.prompt()
            images = [sources.open_image(b) for b in record.images]
            out = self.processor([{"role": "user", "content": prompt}], images, add_generation_prompt=True)
        except Exception:  # a bad record must not stop the run; it is counted
            self.counts["dropped_unprocessable"] += 1
            return None
        if len(out["input_ids"]) > self.config.max_prompt_len:
            self.counts["dropped_overlong"] += 1
            return None
        self.counts["kept"] += 1
        return {
            "prompt": {
                "input_ids": out["input_ids"].astype(np.int32),
                "pixel_values": out["pixel_values"].astype(np.float32),
                "image_grid_thw": out["image_grid_thw"].astype(np.int64),
            },
            "group_id": index * self._shards + self._shard,
            "id": record.id,
            "domain": record.domain,
            "language": record.language,
            "prompt_text": prompt,
            "answer": record.answer,
            "target_png": record.target_image(),
        }


def collate(elements: Sequence[Mapping[str, Any]]) -> RLBatch:
    return RLBatch(
        prompts=[e["prompt"] for e in elements],
        group_ids=np.asarray([e["group_id"] for e in elements], np.int64),
        ids=[e["id"] for e in elements],
        domains=[e["domain"] for e in elements],
        languages=[e["language"] for e in elements],
        prompt_texts=[e["prompt_text"] for e in elements],
        answers=[e["answer"] for e in elements],
        target_pngs=[e["target_png"] for e in elements],
    )


def _weights(config: RLConfig, domains: Sequence[str]) -> list[float]:
    if config.domain_weights == "balanced":
        return [1.0] * len(domains)
    weights = dict(config.domain_weights)
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"domain_weights name domains {unknown} absent from {config.data_dir!r} (has {list(domains)})")
    return [float(weights.get(d, 0.0)) for d in domains]


def build_rl_dataset(
    config: RLConfig, processor: Any, shard: int | None = None, featurizer: RLFeaturizer | None = None
) -> tuple[grain.IterDataset, RLFeaturizer, dict[str, int]]:
    """One data shard's dataset of RLBatch (default: this process's first shard), its featurizer (drop counts) and
    the number of source prompts per domain."""
    source = sources.array_record_source(config.data_dir, config.split)
    by_domain = sources.domain_indices(source)
    domains = sorted(by_domain)
    if config.domain_weights == "natural":
        ds = grain.MapDataset.source(source)
        if config.shuffle:
            ds = ds.shuffle(seed=config.seed)
        ds = ds.repeat(config.num_epochs)
    else:
        weights = _weights(config, domains)
        parts, kept = [], []
        for i, (domain, weight) in enumerate(zip(domains, weights, strict=True)):
            if weight <= 0:
                continue
            part = grain.MapDataset.source(sources.IndexedSource(source, by_domain[domain]))
            if config.shuffle:
                part = part.shuffle(seed=config.seed + i)
            parts.append(part.repeat(None))
            kept.append(weight)
        if not parts:
            raise ValueError(f"domain_weights {config.domain_weights!r} give every domain weight 0")
        ds = grain.MapDataset.mix(parts, kept)
    mine, shards = local_shards(config.data_shards, config.prompts_per_batch)
    shard = mine[0] if shard is None else shard
    ds = ds[shard::shards]
    featurizer = featurizer or RLFeaturizer(processor, config, shard, shards)
    ds = ds.map_with_index(featurizer).filter(lambda e: e is not None)
    rows = config.prompts_per_batch // shards
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    iter_ds = iter_ds.batch(rows, drop_remainder=True, batch_fn=collate)
    return iter_ds, featurizer, {d: len(by_domain[d]) for d in domains}


class RLLoader:
    """Iterator of this process's RLBatch (its data shards' prompts, in shard order) with checkpointable position
    (`get_state`/`set_state`)."""

    def __init__(self, config: RLConfig, processor: Any = None):
        if processor is None:
            from vinci_jax.models.families import get_family

            pixels = {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
            processor = get_family(config.family or "qwen2_5_vl").processor_with(None, **pixels)
        self.config = config
        shards = local_shards(config.data_shards, config.prompts_per_batch)[0]
        built = [build_rl_dataset(config, processor, shard=s) for s in shards]
        self.datasets = [ds for ds, _, _ in built]
        self.featurizers = [f for _, f, _ in built]  # one per shard: group ids depend on the shard
        self.domain_sizes = built[0][2]
        self.streams = ShardIterators(shards, [iter(ds) for ds in self.datasets])

    @property
    def featurizer(self) -> RLFeaturizer:
        return self.featurizers[0]

    def __iter__(self) -> RLLoader:
        return self

    def __next__(self) -> RLBatch:
        return RLBatch.concat(self.streams.next_all())

    def get_state(self) -> dict[str, Any]:
        return self.streams.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.streams.set_state(state)

    @property
    def counts(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for featurizer in self.featurizers:
            total.update(featurizer.counts)
        return dict(total)
