"""The perturbation ladder: does a reward rank drawings the way a person would?

For each synthetic domain, targets are drawn from the generators, rendered as the data build renders them, and
scored against responses of growing severity, each rendered and scored through the exact ViRL path
(`VisualReward.render_jobs` with no extra options, `RenderPool`, `VisualReward.score`):

  0 gold             the target's own code
  1 small_change     one element recoloured (the domain's `wrong_colour` mutation)
  2 missing_element  one element dropped
  3 wrong_structure  wrong chart type / layout / molecule / moved shape
  4 unrelated        the gold code of another sample of the same domain
  5 trivial          a blank canvas of the target's size, or the domain's minimal program (evaluate/anchors.py)

A good reward falls with the severity: Spearman of the mean score per rung against the rung index is -1, gold
scores 1 and the trivial output scores low.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vinci_jax.evaluate.anchors import trivial_code

RUNGS = ("gold", "small_change", "missing_element", "wrong_structure", "unrelated", "trivial")
STRUCTURE_MUTATIONS = {  # the first that applies to a sample
    "chart": ("wrong_chart_type",),
    "tikz": ("wrong_chart_type", "wrong_position"),  # plots change type; drawings get a shape moved
    "web": ("wrong_layout",),
    "chem": ("wrong_molecule",),
    "svg": ("wrong_position",),
}
_RUNG_MUTATIONS = ("wrong_colour", "missing_element")


@dataclass
class Rungs:
    """One target's ladder: the codes of every rung (the trivial one is written once the target size is known)."""

    domain: str
    seed: int
    prompt: str
    codes: list[str]
    target: Image.Image | None = None
    target_png: bytes = b""


@dataclass
class DomainLadder:
    """scores[t, r]: total reward of rung r against target t."""

    domain: str
    scores: np.ndarray
    statuses: list[list[str]] = field(default_factory=list)
    rungs: list[Rungs] = field(default_factory=list)

    @property
    def means(self) -> np.ndarray:
        return self.scores.mean(axis=0)

    @property
    def spearman(self) -> float:
        """Spearman of the mean score per rung against severity, sign flipped (1: scores fall with severity)."""
        return -spearman(np.arange(len(RUNGS)), self.means)

    @property
    def per_target_spearman(self) -> float:
        return float(np.mean([-spearman(np.arange(len(RUNGS)), row) for row in self.scores]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "means": {rung: round(float(m), 4) for rung, m in zip(RUNGS, self.means, strict=True)},
            "spearman": round(self.spearman, 4),
            "per_target_spearman": round(self.per_target_spearman, 4),
            "targets": int(self.scores.shape[0]),
        }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation with average ranks for ties (0 when either side is constant)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v), np.float64)
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(np.asarray(x, np.float64)), ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def make_rungs(domain: str, seed: int, difficulty: int = 1) -> Rungs | None:
    """The ladder codes for one target of `domain` (None when a mutation does not apply to this sample)."""
    from vinci_data.synth.build import DOMAIN_REGISTRY
    from vinci_data.synth.common import generate_prompt

    spec_of = DOMAIN_REGISTRY[domain]
    rng = random.Random(f"vinci-ladder/{domain}/{seed}")
    spec = spec_of.sample(rng, difficulty)
    gold = spec_of.to_code(spec)
    codes = [gold]
    for names in (*((name,) for name in _RUNG_MUTATIONS), STRUCTURE_MUTATIONS[domain]):
        for name in names:
            code = spec_of.mutations[name](spec, random.Random(f"vinci-ladder/{domain}/{seed}/{name}"))
            if code is not None and code != gold:
                codes.append(code)
                break
        else:
            return None
    other = spec_of.to_code(spec_of.sample(random.Random(f"vinci-ladder/{domain}/{seed}/unrelated"), difficulty))
    if other == gold:
        return None
    codes.append(other)
    return Rungs(domain, seed, generate_prompt(spec_of, rng), codes)


def _targets(ladders: list[Rungs], render_batch: Any) -> None:
    """Render every gold code as the data build renders a target (its domain's options, PNG normalised)."""
    from vinci_data.synth.build import SynthConfig, normalise_png, render_job

    config = SynthConfig(size=0)
    jobs = [render_job(r.domain, r.codes[0], config, f"ladder/{r.domain}/{r.seed}") for r in ladders]
    for rungs, result in zip(ladders, render_batch(jobs), strict=True):
        if not result.ok:
            raise RuntimeError(f"ladder target {rungs.domain}/{rungs.seed} did not render: {result.error}")
        rungs.target_png = normalise_png(result.png)
        rungs.target = Image.open(io.BytesIO(rungs.target_png)).convert("RGB")
        rungs.codes.append(trivial_code(rungs.domain, *rungs.target.size))


def run_ladder(
    domains: Sequence[str], targets: int, reward: Any, pool: Any, difficulty: int = 1
) -> dict[str, DomainLadder]:
    """Build `targets` ladders per domain and score every rung through the ViRL reward path."""
    from vinci_data.synth.build import DOMAIN_REGISTRY
    from vinci_data.synth.common import fence

    ladders: list[Rungs] = []
    for domain in domains:
        seed, found = 0, 0
        while found < targets:
            rungs = make_rungs(domain, seed, difficulty)
            seed += 1
            if rungs is not None:
                ladders.append(rungs)
                found += 1
            if seed > 50 * targets:
                raise RuntimeError(f"could not build {targets} ladders for domain {domain!r}")
    _targets(ladders, pool.render_batch)
    prompts, responses, images, groups = [], [], [], []
    for g, rungs in enumerate(ladders):
        language = DOMAIN_REGISTRY[rungs.domain].language
        for code in rungs.codes:
            prompts.append(rungs.prompt)
            responses.append(fence(language, code))
            images.append(rungs.target)
            groups.append(g)
    batch = reward.score_with_pool(prompts, responses, images, pool, groups)
    out: dict[str, DomainLadder] = {}
    per = len(RUNGS)
    for domain in domains:
        rows = [g for g, r in enumerate(ladders) if r.domain == domain]
        scores = np.stack([batch.total[g * per : (g + 1) * per] for g in rows])
        statuses = [batch.statuses[g * per : (g + 1) * per] for g in rows]
        out[domain] = DomainLadder(domain, scores, statuses, [ladders[g] for g in rows])
    return out
