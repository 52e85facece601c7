"""`python -m vinci_jax.generate` on a tiny chat checkpoint, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    sampled = _run(*common, "--n", "3", "--temperature", "1.0", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    rows = [json.loads(line) for line in sampled.stdout.splitlines() if line.startswith("{")]
    assert [r["sample"] for r in rows] == [0, 1, 2]
    assert all(1 <= r["tokens"] <= 6 and r["logprob"] <= 0 for r in rows)
    greedy = _run(*common, "--greedy", "--n", "5")
    assert greedy.returncode == 0, greedy.stderr
    assert len(greedy.stdout.splitlines()) == 1  # greedy forces a single sample


def test_generate_reports_unreadable_image(tiny_qwen25_chat_dir, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    proc = _run("--model", str(tiny_qwen25_chat_dir), "--image", str(bad), "--prompt", "x")
    assert proc.returncode == 2 and "cannot read image" in proc.stderr
