"""The ViRL job from the command line on a tiny synthetic corpus: it runs, checkpoints, resumes exactly, exports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _virl(corpus, workdir, steps, *extra):
    args = [
        sys.executable, "-m", "vinci_jax.launch", "--config", "configs/virl.py:tiny",
        f"--config.data.path={corpus}", f"--config.workdir={workdir}", f"--config.num_steps={steps}",
        "--config.data.prompts_per_step=2", "--config.rollout.n=2", "--config.rollout.max_new_tokens=8",
        "--config.rollout.chunk_prompts=1", "--config.checkpoint.every_steps=1", "--config.checkpoint.async_save=False",
        "--config.eval.prompts=2", "--config.render.num_workers=1", "--config.progress=False", *extra,
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _records(workdir):
    return {r["step"]: r for r in map(json.loads, (Path(workdir) / "metrics.jsonl").read_text().splitlines())}


def test_virl_runs_resumes_to_the_same_step_and_exports(tiny_svg_rl_corpus, tmp_path):
    corpus = tiny_svg_rl_corpus
    straight = tmp_path / "straight"
    proc = _virl(corpus, straight, 2, f"--config.export_dir={tmp_path / 'export'}")
    assert "[virl] held-out after:" in proc.stdout
    first = _records(straight)
    assert sorted(first) == [1, 2]
    for key in ("reward", "format", "execution", "entropy", "param_norm", "sample_s", "render_wait_s", "wall_s"):
        assert key in first[2], key
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "export" / "tokenizer.json").is_file()

    resumed = tmp_path / "resumed"
    _virl(corpus, resumed, 1)
    _virl(corpus, resumed, 2)  # restarts from the step-1 checkpoint
    second = _records(resumed)
    for key in ("entropy", "param_norm", "response_len", "reward", "grad_norm"):
        assert second[2][key] == pytest.approx(first[2][key], rel=1e-5, abs=1e-6), key
