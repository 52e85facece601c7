"""Build the synthetic corpus: plan samples from the seed, render them through a RenderPool, write ArrayRecord shards.

Determinism: a sample is a pure function of (seed, index, attempt) (`make_candidate`), renders are re-encoded from
their pixels (so renderer PNG metadata cannot leak in), and records are written in index order. Two builds with the
same seed and renderers therefore give byte-identical shards.

A refinement sample is accepted only when its flawed code renders differently from the correct code (or fails to
render); otherwise, like a sample whose correct code fails to render, it is re-drawn with the next attempt.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from vinci_data.records import Record, RecordWriter, write_stats
from vinci_data.synth import chart, chem, svg, tikz, web
from vinci_data.synth.common import Domain, fence, generate_prompt, refine_prompt

DOMAIN_REGISTRY: dict[str, Domain] = {
    d.name: d for d in (chart.DOMAIN, svg.DOMAIN, web.DOMAIN, tikz.DOMAIN, chem.DOMAIN)
}

RenderBatch = Callable[[Sequence[Any]], list[Any]]  # list[RenderJob] -> list[RenderResult]


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    size: int
    seed: int = 0
    domains: tuple[str, ...] = tuple(DOMAIN_REGISTRY)
    refine_fraction: float = 0.3
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    difficulty_weights: tuple[float, float, float] = (0.4, 0.4, 0.2)
    simple: bool = False  # the demo's simpler programs (`Domain.sample_simple`, difficulty 0 where a domain has none)
    max_attempts: int = 5
    num_shards: int = 1
    chunk_size: int = 512  # samples rendered per round trip; bounds memory of a large build
    timeout_s: float = 20.0

    def __post_init__(self) -> None:
        unknown = [d for d in self.domains if d not in DOMAIN_REGISTRY]
        if unknown:
            raise ValueError(f"unknown synthetic domains {unknown}; choose from {sorted(DOMAIN_REGISTRY)}")
        if not self.domains:
            raise ValueError("SynthConfig.domains is empty; name at least one of " + ", ".join(DOMAIN_REGISTRY))
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One planned sample before rendering."""

    index: int
    attempt: int
    domain: str
    task: str
    split: str
    difficulty: int
    code: str
    prompt: str
    flawed_code: str = ""
    mutation: str = ""


def _split(rng: random.Random, config: SynthConfig) -> str:
    u = rng.random()
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def make_candidate(config: SynthConfig, index: int, attempt: int = 0) -> Candidate:
    """The sample at `index` (its `attempt`-th draw): a pure function of the seed, so builds are reproducible.

    Domain, split and task depend on the index only (stable counts across attempts); the spec and the mutation are
    redrawn on every attempt.
    """
    base = random.Random(f"vinci-synth/{config.seed}/{index}")
    domain = DOMAIN_REGISTRY[config.domains[index % len(config.domains)]]
    split = _split(base, config)
    task = "refine" if base.random() < config.refine_fraction else "generate"
    rng = random.Random(f"vinci-synth/{config.seed}/{index}/{attempt}")
    if config.simple:
        difficulty = 0
        spec = domain.sample_simple(rng) if domain.sample_simple else domain.sample(rng, 0)
    else:
        difficulty = rng.choices(range(3), weights=config.difficulty_weights)[0]
        spec = domain.sample(rng, difficulty)
    code = domain.to_code(spec)
    if task == "generate":
        return Candidate(index, attempt, domain.name, task, split, difficulty, code, generate_prompt(domain, rng))
    names = sorted(domain.mutations)
    rng.shuffle(names)
    for name in names:
        flawed = domain.mutations[name](spec, rng)
        if flawed is not None and flawed != code:
            prompt = refine_prompt(domain, rng, flawed)
            return Candidate(index, attempt, domain.name, task, split, difficulty, code, prompt, flawed, name)
    raise RuntimeError(f"no mutation of domain {domain.name!r} applies to sample {index} (attempt {attempt})")


def normalise_png(png: bytes) -> bytes:
    """PNG re-encoded from its RGB pixels: drops renderer metadata (timestamps, versions) so bytes follow pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        if img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            rgb = img.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def render_job(domain: str, code: str, config: SynthConfig, job_id: str) -> Any:
    from renderers import RenderJob

    spec = DOMAIN_REGISTRY[domain]
    options = {**spec.render_options, "timeout_s": config.timeout_s}
    return RenderJob(code=code, language=spec.language, options=options, id=job_id)


def _to_record(c: Candidate, target_png: bytes, flawed_status: str, seed: int) -> Record:
    domain = DOMAIN_REGISTRY[c.domain]
    answer = fence(domain.language, c.code)
    meta: dict[str, Any] = {"attempt": c.attempt, "source": "synthetic", "seed": seed}
    if c.task == "refine":
        meta.update(mutation=c.mutation, flawed_code=c.flawed_code, flawed_render=flawed_status)
    return Record(
        id=f"synth-{seed}-{c.index:07d}",
        domain=c.domain,
        task=c.task,
        language=domain.language,
        images=[target_png],
        messages=[{"role": "user", "content": c.prompt}, {"role": "assistant", "content": answer}],
        problem=c.prompt,
        answer=c.code,
        split=c.split,
        difficulty=c.difficulty,
        meta=meta,
    )


class _Stats:
    def __init__(self) -> None:
        self.nested: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.seconds: collections.Counter[str] = collections.Counter()  # render time per domain (not in stats.json)

    def add(self, table: str, key: str, n: int = 1) -> None:
        self.nested[table][key] += n

    def as_dict(self) -> dict[str, Any]:
        tables = {"redrawn": {}, "dropped": {}, "mutations": {}}  # present even when empty, for readers of stats.json
        tables.update({table: dict(sorted(counter.items())) for table, counter in sorted(self.nested.items())})
        return dict(sorted(tables.items()))


def _render_round(
    candidates: list[Candidate], config: SynthConfig, render_batch: RenderBatch, stats: _Stats
) -> tuple[list[Record], list[Candidate]]:
    """Render one round; returns accepted records and the candidates to redraw."""
    jobs = []
    for c in candidates:
        jobs.append(render_job(c.domain, c.code, config, f"{c.index}/{c.attempt}"))
        if c.task == "refine":
            jobs.append(render_job(c.domain, c.flawed_code, config, f"{c.index}/{c.attempt}/flawed"))
    results = iter(render_batch(jobs))
    accepted: list[Record] = []
    retry: list[Candidate] = []
    for c in candidates:
        target = next(results)
        flawed = next(results) if c.task == "refine" else None
        stats.add("renders", c.domain, 1 + (flawed is not None))
        stats.seconds[c.domain] += target.seconds + (flawed.seconds if flawed is not None else 0.0)
        reason = ""
        target_png = b""
        if not target.ok or target.blank:
            reason = f"target_{target.status if not target.ok else 'blank'}"
        else:
            target_png = normalise_png(target.png)
            if flawed is not None and flawed.ok and normalise_png(flawed.png) == target_png:
                reason = "mutation_unchanged"
        if reason:
            stats.add("redrawn", f"{c.domain}/{reason}")
            if c.attempt + 1 < config.max_attempts:
                retry.append(make_candidate(config, c.index, c.attempt + 1))
            else:
                stats.add("dropped", c.domain)
            continue
        flawed_status = "" if flawed is None else ("differs" if flawed.ok else flawed.status)
        if c.task == "refine":
            stats.add("mutations", f"{c.domain}/{c.mutation}/{flawed_status}")
        accepted.append(_to_record(c, target_png, flawed_status, config.seed))
    return accepted, retry


def _stop_on_infra(render_batch: RenderBatch) -> RenderBatch:
    """render_batch that raises RenderInfraError when renderer (not code) failures appear in the first batch or
    exceed the shared budget (renderers.health) of a later one."""
    from renderers.health import InfraBudget

    budget, first = InfraBudget(), [True]

    def checked(jobs: list[Any]) -> list[Any]:
        results = render_batch(jobs)
        budget.check_results(results, [job.language for job in jobs], first=first[0])
        first[0] = False
        return results

    return checked


def build_synth(
    out_dir: str,
    config: SynthConfig,
    render_batch: RenderBatch | None = None,
    num_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Build the corpus into `out_dir` (shards + stats.json); returns the stats.

    render_batch: a `RenderPool.render_batch`-like callable; by default a RenderPool with `num_workers` workers is
    started for the languages the chosen domains need and closed at the end.
    """
    start = time.perf_counter()
    pool = None
    if render_batch is None:
        from renderers import RenderPool

        languages = sorted({DOMAIN_REGISTRY[d].language for d in config.domains})
        pool = RenderPool(num_workers=num_workers, languages=languages, timeout_s=config.timeout_s)
        pool.self_check()  # a broken renderer fails here, with its cause, not as a corpus of redraws
        render_batch = pool.render_batch
    render_batch = _stop_on_infra(render_batch)
    stats = _Stats()
    written = 0
    try:
        with RecordWriter(out_dir, num_shards=config.num_shards) as writer:
            for chunk_start in range(0, config.size, config.chunk_size):
                indices = range(chunk_start, min(config.size, chunk_start + config.chunk_size))
                pending = [make_candidate(config, i) for i in indices]
                done: list[Record] = []
                while pending:
                    accepted, pending = _render_round(pending, config, render_batch, stats)
                    done += accepted
                for record in sorted(done, key=lambda r: r.id):
                    writer.write(record)
                    stats.add("domain", record.domain)
                    stats.add("task", record.task)
                    stats.add("split", record.split)
                    stats.add("difficulty", str(record.difficulty))
                    stats.add("domain/task/split", f"{record.domain}/{record.task}/{record.split}")
                written += len(done)
                if progress is not None:
                    progress(min(config.size, chunk_start + config.chunk_size), config.size)
    finally:
        if pool is not None:
            pool.close()
    result = {
        "kind": "synthetic",
        "requested": config.size,
        "written": written,
        "config": {**dataclasses.asdict(config), "domains": list(config.domains)},
        **stats.as_dict(),
    }
    # Timing goes to the caller, not stats.json, so the directory stays byte-identical across builds.
    write_stats(out_dir, result)
    render_seconds = {d: round(s, 2) for d, s in sorted(stats.seconds.items())}
    return {**result, "seconds": round(time.perf_counter() - start, 2), "render_seconds": render_seconds}


def ensure_synth(out_dir: str, config: SynthConfig, **kwargs: Any) -> dict[str, Any]:
    """Build the corpus unless `out_dir` already holds one built with the same config (demo and test fixtures)."""
    import json
    import os

    from vinci_data.records import read_stats

    want = json.loads(json.dumps({**dataclasses.asdict(config), "domains": list(config.domains)}))
    if os.path.exists(os.path.join(out_dir, "stats.json")):
        stats = read_stats(out_dir)
        if stats.get("config") == want and stats.get("written") == config.size:
            return stats
    return build_synth(out_dir, config, **kwargs)
