"""The demo's held-out measurement: distinct targets never seen in training, stratified by domain, scored with
their anchors.

`write_heldout` keeps test records whose (domain, gold code) is neither in the train split nor repeated, takes up to
`per_domain` of each domain, and writes them as the corpus' `heldout` split (from `val` instead: `heldout_val`,
for choosing settings without the test figures). `HeldOut` scores a policy's greedy
rollouts on that split through the ViRL trainer (its sampler, render pool and reward) and puts every figure beside
its anchors on the same prompts: the trivial output's score and the gold code's score (vinci_jax/evaluate/anchors.py).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import numpy as np

from vinci_jax.evaluate.anchors import Anchored, per_sample_normalised, trivial_code

HELDOUT_SPLIT = "heldout"
# the corpus split each held-out set is drawn from -> the split it is written as. `val` is for choosing settings
# (learning rate, KL, group size ...) without looking at the test figures the demo reports.
HELDOUT_SPLITS = {"test": HELDOUT_SPLIT, "val": "heldout_val"}


def write_heldout(corpus_dir: str | os.PathLike, per_domain: int, source: str = "test") -> dict[str, Any]:
    """Write the held-out split drawn from corpus split `source` (`HELDOUT_SPLITS`); returns counts per domain and
    why records were left out. A `val` held-out set also leaves out every answer of the test split, so the two
    sets share no target."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from vinci_data.records import ARRAY_RECORD_OPTIONS, encode_record, read_records, shard_name

    if source not in HELDOUT_SPLITS:
        raise ValueError(f"held-out source split must be one of {sorted(HELDOUT_SPLITS)}, not {source!r}")
    split = HELDOUT_SPLITS[source]
    excluded = ("train",) if source == "test" else ("train", "test")
    seen = {(r.domain, r.answer) for name in excluded for r in read_records(corpus_dir, name)}
    chosen: dict[str, list[Any]] = collections.defaultdict(list)
    dropped: collections.Counter[str] = collections.Counter()
    for record in read_records(corpus_dir, source):
        key = (record.domain, record.answer)
        if key in seen:
            dropped["seen_in_train_or_repeated"] += 1
            continue
        seen.add(key)
        if len(chosen[record.domain]) >= per_domain:
            dropped["over_per_domain"] += 1
            continue
        chosen[record.domain].append(dataclasses.replace(record, split=split))
    if not chosen:
        raise ValueError(f"{corpus_dir}: no distinct {source} records for the held-out set (corpus too small?)")
    path = os.path.join(os.fspath(corpus_dir), shard_name(split, 0, 1))
    writer = ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
    try:
        # domains interleaved, so any prefix of the split stays stratified
        for row in range(max(len(v) for v in chosen.values())):
            for domain in sorted(chosen):
                if row < len(chosen[domain]):
                    writer.write(encode_record(chosen[domain][row]))
    finally:
        writer.close()
    counts = {d: len(v) for d, v in sorted(chosen.items())}
    return {"per_domain": counts, "total": sum(counts.values()), "dropped": dict(dropped)}


@dataclasses.dataclass
class PolicyScores:
    """Per-prompt held-out figures of one policy (prompt order of the held-out batch)."""

    domains: list[str]
    reward: np.ndarray
    execution: np.ndarray
    format: np.ndarray
    normalised: np.ndarray
    rollouts: Any = None

    def summary(self, anchors: HeldOutAnchors) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ["all", *sorted(set(self.domains))]:
            pick = np.ones(len(self.domains), bool) if name == "all" else np.asarray(self.domains) == name
            anchored = Anchored(
                float(self.reward[pick].mean()), float(anchors.trivial[pick].mean()), float(anchors.gold[pick].mean())
            )
            out[name] = {
                **anchored.as_dict(),
                "normalised_per_prompt": float(np.nanmean(self.normalised[pick])),
                "execution": float(self.execution[pick].mean()),
                "format": float(self.format[pick].mean()),
                "prompts": int(pick.sum()),
            }
        return out


@dataclasses.dataclass
class HeldOutAnchors:
    trivial: np.ndarray
    gold: np.ndarray


class HeldOut:
    """The held-out batch of a ViRL trainer, its anchors (computed once) and greedy scoring of the current policy."""

    def __init__(self, trainer: Any, prompts: int, split: str = HELDOUT_SPLIT) -> None:
        self.trainer = trainer
        self.prompts = prompts
        self.split = split
        self.batch = None
        self.anchors: HeldOutAnchors | None = None

    def score(self) -> PolicyScores:
        """Greedy rollouts of the trainer's current policy on the held-out split."""
        _, batch, rollouts = self.trainer.evaluate_rollouts(self.split, self.prompts)
        if self.batch is None:
            self.batch = batch
            self.anchors = self._anchors(batch)
        elif list(batch.ids) != list(self.batch.ids):
            raise RuntimeError("the held-out batch changed between evaluations; paired statistics need the same one")
        n = len(batch.prompts)
        if len(rollouts.rewards) != n or not np.array_equal(rollouts.prompt_of_row, np.arange(n)):
            raise RuntimeError("greedy held-out rollouts must be one per prompt, in prompt order")
        reward = np.asarray(rollouts.rewards, np.float64)
        return PolicyScores(
            list(batch.domains),
            reward,
            np.asarray(rollouts.terms["execution"], np.float64),
            np.asarray(rollouts.terms["format"], np.float64),
            per_sample_normalised(reward, self.anchors.trivial, self.anchors.gold),
            rollouts,
        )

    def _anchors(self, batch: Any) -> HeldOutAnchors:
        """Trivial-output and gold-code rewards per held-out prompt, through the trainer's reward path."""
        from vinci_data.synth.common import fence

        targets = batch.target_images()
        responses = [fence(lang, code) for lang, code in zip(batch.languages, batch.answers, strict=True)]
        responses += [
            fence(lang, trivial_code(domain, *target.size))
            for lang, domain, target in zip(batch.languages, batch.domains, targets, strict=True)
        ]
        n = len(targets)
        scored = self.trainer.reward.score_with_pool(
            list(batch.prompt_texts) * 2, responses, targets * 2, self.trainer.pool, list(range(n)) * 2
        )
        return HeldOutAnchors(trivial=scored.total[n:].copy(), gold=scored.total[:n].copy())
