"""A tiny ViRL run with the paged engine (the default) equals one with the lockstep sampler: same rollouts, rewards
and update."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _virl_step(corpus, workdir, engine):
    args = [
        sys.executable, "-m", "vinci_jax.launch", "--config", "configs/virl.py:tiny",
        f"--config.data.path={corpus}", f"--config.workdir={workdir}", "--config.num_steps=1",
        "--config.data.prompts_per_step=2", "--config.rollout.n=2", "--config.rollout.max_new_tokens=8",
        "--config.rollout.chunk_prompts=2", "--config.checkpoint.every_steps=1",
        "--config.checkpoint.async_save=False", "--config.eval.prompts=1", "--config.render.num_workers=1",
        "--config.progress=False",
        f"--config.rollout.engine={engine}", "--config.rollout.paged.slots=2", "--config.rollout.paged.page_size=8",
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("step") == 1)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_virl_step_with_the_engine_equals_the_lockstep_sampler(tiny_svg_rl_corpus, tmp_path):
    paged = _virl_step(tiny_svg_rl_corpus, tmp_path / "paged", "paged")
    lockstep = _virl_step(tiny_svg_rl_corpus, tmp_path / "lockstep", "lockstep")
    for key in ("reward", "format", "execution", "response_len", "entropy", "grad_norm", "param_norm"):
        assert paged[key] == pytest.approx(lockstep[key], rel=1e-5, abs=1e-6), key
