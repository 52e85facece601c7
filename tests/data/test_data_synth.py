"""Synthetic corpus: seeded generators, prompts naming the language, byte-identical builds, mutations that show."""

from __future__ import annotations

import os

import pytest
from vinci_data.records import read_records, read_stats
from vinci_data.synth import DOMAIN_REGISTRY, SynthConfig, build_synth, ensure_synth, make_candidate
from vinci_data.synth.build import normalise_png, render_job

from renderers import language_from_prompt


def test_candidates_are_a_pure_function_of_seed_and_index():
    config = SynthConfig(size=60, seed=11)
    first = [make_candidate(config, i) for i in range(60)]
    assert first == [make_candidate(config, i) for i in range(60)]
    other = [make_candidate(SynthConfig(size=60, seed=12), i) for i in range(60)]
    assert sum(a.code != b.code for a, b in zip(first, other, strict=True)) > 50
    assert {c.domain for c in first} == set(DOMAIN_REGISTRY)
    assert {c.task for c in first} == {"generate", "refine"} and {c.difficulty for c in first} == {0, 1, 2}
    redrawn = make_candidate(config, 3, attempt=1)
    assert (redrawn.domain, redrawn.task, redrawn.split) == (first[3].domain, first[3].task, first[3].split)


@pytest.mark.parametrize("domain", sorted(DOMAIN_REGISTRY))
def test_prompts_name_the_language_and_mutations_change_the_code(domain):
    config = SynthConfig(size=200, seed=3, domains=(domain,), refine_fraction=0.5)
    spec = DOMAIN_REGISTRY[domain]
    mutations = set()
    for i in range(200):
        c = make_candidate(config, i)
        assert language_from_prompt(c.prompt) == spec.language, c.prompt
        assert c.prompt.count("<image>") == 1
        if c.task == "refine":
            assert c.flawed_code != c.code and f"```{spec.language}\n{c.flawed_code.rstrip()}\n```" in c.prompt
            mutations.add(c.mutation)
    assert len(mutations) >= len(spec.mutations) - 1, f"{domain}: only {sorted(mutations)} were drawn"


@pytest.fixture(scope="module")
def pool():
    from renderers import RenderPool

    with RenderPool(num_workers=2, languages=["html", "latex", "python", "svg"], timeout_s=30.0) as render_pool:
        yield render_pool


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def test_synthetic_builds_are_byte_identical_for_the_same_seed(tmp_path, pool):
    config = SynthConfig(size=10, seed=5, refine_fraction=0.3, val_fraction=0.2, test_fraction=0.1)
    stats = build_synth(str(tmp_path / "a"), config, render_batch=pool.render_batch)
    build_synth(str(tmp_path / "b"), config, render_batch=pool.render_batch)
    # an existing build with the same config is reused, not rebuilt
    assert "seconds" not in ensure_synth(str(tmp_path / "b"), config, render_batch=pool.render_batch)
    a, b = _files(str(tmp_path / "a")), _files(str(tmp_path / "b"))
    assert a == b and "stats.json" in a and any(name.endswith(".array_record") for name in a)
    written = read_stats(str(tmp_path / "a"))
    assert written["written"] == 10 == sum(written["domain"].values()) == sum(written["split"].values())
    assert written["domain"] == {d: 2 for d in DOMAIN_REGISTRY} and stats["seconds"] > 0
    records = [r for split in ("train", "val", "test") for r in read_records(str(tmp_path / "a"), split)]
    assert sorted(r.id for r in records) == [f"synth-5-{i:07d}" for i in range(10)]
    for r in records:
        assert r.images[0].startswith(b"\x89PNG") and r.messages[1]["content"].startswith(f"```{r.language}\n")
        assert r.problem == r.messages[0]["content"] and r.answer in r.messages[1]["content"]


def test_every_refinement_sample_renders_differently_from_its_correct_code(tmp_path, pool):
    config = SynthConfig(size=10, seed=8, refine_fraction=1.0)
    build_synth(str(tmp_path / "refine"), config, render_batch=pool.render_batch)
    records = list(read_records(str(tmp_path / "refine")))
    assert len(records) == 10 and {r.domain for r in records} == set(DOMAIN_REGISTRY)
    jobs = []
    for r in records:
        jobs.append(render_job(r.domain, r.answer, config, f"{r.id}/correct"))
        jobs.append(render_job(r.domain, r.meta["flawed_code"], config, f"{r.id}/flawed"))
    results = pool.render_batch(jobs)
    for r, correct, flawed in zip(records, results[::2], results[1::2], strict=True):
        assert correct.ok and normalise_png(correct.png) == r.target_image(), f"{r.id}: target not reproducible"
        assert r.meta["flawed_code"] in r.prompt()
        if flawed.ok:
            assert normalise_png(flawed.png) != r.target_image(), f"{r.id} ({r.meta['mutation']}) renders the same"
            assert r.meta["flawed_render"] == "differs"
        else:
            assert r.meta["flawed_render"] == flawed.status
