"""`python -m vinci_jax.generate` on a tiny chat checkpoint, as a user runs it; the evaluator's generation with the
rollout engine equals the lockstep sampler's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "vinci_jax.generate", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_generate_prints_n_samples_and_greedy_prints_one(tiny_qwen25_chat_dir, tmp_path):
    image = tmp_path / "chart.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(image)
    common = ["--model", str(tiny_qwen25_chat_dir), "--image", str(image), "--prompt", "Write matplotlib code.",
              "--max_new_tokens", "6", "--json"]  # fmt: skip
    sampled = _run(*common, "--n", "3", "--temperature", "1.0", "--seed", "1")  # the engine, by default
    assert sampled.returncode == 0, sampled.stderr
    rows = [json.loads(line) for line in sampled.stdout.splitlines() if line.startswith("{")]
    assert [r["sample"] for r in rows] == [0, 1, 2]
    assert all(1 <= r["tokens"] <= 6 and r["logprob"] <= 0 for r in rows)
    greedy = _run(*common, "--greedy", "--n", "5")
    assert greedy.returncode == 0, greedy.stderr
    assert len(greedy.stdout.splitlines()) == 1  # greedy forces a single sample


@pytest.mark.slow
def test_generate_with_the_engine_and_the_lockstep_sampler_prints_the_same_samples(tiny_qwen25_chat_dir, tmp_path):
    image = tmp_path / "chart.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(image)
    common = ["--model", str(tiny_qwen25_chat_dir), "--image", str(image), "--prompt", "Write SVG code.",
              "--max_new_tokens", "8", "--json", "--n", "3", "--seed", "4"]  # fmt: skip
    out = {}
    for engine in ("paged", "lockstep"):
        proc = _run(*common, "--engine", engine)
        assert proc.returncode == 0, proc.stderr
        out[engine] = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(out["paged"]) == 3
    key = lambda r: (r["text"], r["tokens"], r["finished"])  # noqa: E731
    assert [key(r) for r in out["paged"]] == [key(r) for r in out["lockstep"]]
    np.testing.assert_allclose([r["logprob"] for r in out["paged"]], [r["logprob"] for r in out["lockstep"]],
                               atol=1e-4)  # fmt: skip


def test_generate_reports_unreadable_image(tiny_qwen25_chat_dir, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    proc = _run("--model", str(tiny_qwen25_chat_dir), "--image", str(bad), "--prompt", "x")
    assert proc.returncode == 2 and "cannot read image" in proc.stderr


def test_evaluator_generation_with_the_engine_equals_the_lockstep_sampler(tiny_qwen25_chat_dir):
    import io

    from vinci_jax.evaluate.generation import generate_responses
    from vinci_jax.evaluate.samples import EvalSample
    from vinci_jax.policy import load_policy

    model, processor = load_policy(str(tiny_qwen25_chat_dir))
    rng = np.random.default_rng(1)
    samples = []
    for i, (h, w) in enumerate([(56, 84), (84, 56), (28, 28)]):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        samples.append(EvalSample(id=str(i), suite="synthetic", domain="svg", language="svg",
                                  prompt="<image>Write SVG code." + " again" * i, image=buf.getvalue()))  # fmt: skip
    kw = dict(max_new_tokens=6, batch_size=4)  # one batch: one compile per generator
    paged = generate_responses(model, processor, samples, engine="paged", **kw)
    lockstep = generate_responses(model, processor, samples, engine="lockstep", **kw)
    assert paged == lockstep and len(paged) == 3 and all(paged)
