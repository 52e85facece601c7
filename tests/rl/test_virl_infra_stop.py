"""A tiny ViRL run whose renderer breaks after its start-up check stops in its first step naming the cause, instead
of training on rewards that only say every render failed.

The run is the real ViRLTrainer (tiny random Qwen2.5-VL, the synthetic SVG corpus, the real render pool and
reward); two things are arranged around it. A random tiny policy never writes a fenced program, so its decoded
responses are replaced by a fixed SVG block (what a policy that had learnt the format would send). The fault is a
real one: once the self-check has passed, the pool's only worker is killed with SIGKILL and its work root turned
into a file, so no replacement worker can start; every render of the step comes back `infra`.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import renderers
from renderers import RenderInfraError, sandbox

SVG_ANSWER = (
    '```svg\n<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    '<rect width="32" height="16" fill="red"/></svg>\n```'
)


class FencedAnswers:
    """The trainer's processor, except that every decoded response is the same fenced SVG program."""

    def __init__(self, processor):
        self._processor = processor
        self.decoded = 0

    def decode(self, ids, *args, **kwargs):
        self.decoded += 1
        return SVG_ANSWER

    def __getattr__(self, name):
        return getattr(self._processor, name)


def tiny_config(corpus: Path, workdir: Path):
    from configs.virl import get_config

    config = get_config("tiny")
    config.data.path = str(corpus)
    config.workdir = str(workdir)
    config.num_steps = 2
    config.data.prompts_per_step = 2
    config.rollout.n = 2
    config.rollout.max_new_tokens = 4
    config.rollout.chunk_prompts = 2
    config.render.num_workers = 1
    config.progress = False
    return config


@pytest.mark.skipif(not sandbox.is_root(), reason="the pool's worker sandbox (and the kill) as in the renderer tests")
def test_renderer_failing_mid_run_stops_the_first_step_with_the_cause(tiny_svg_rl_corpus, tmp_path, monkeypatch):
    import jax

    from vinci_jax import sharding
    from vinci_jax.rl.virl import ViRLTrainer

    # Only the SVG renderer: the corpus is SVG, and Chromium / the TeX formats would only make the start slower.
    monkeypatch.setattr(renderers, "RenderPool", functools.partial(renderers.RenderPool, languages=["svg"]))
    # One device instead of the suite's 8 fake ones: a third less compile time, the same code path.
    monkeypatch.setattr(sharding, "make_mesh", functools.partial(sharding.make_mesh, devices=jax.devices()[:1]))
    trainer = ViRLTrainer(tiny_config(tiny_svg_rl_corpus, tmp_path / "run"))
    pool = trainer.pool
    try:
        trainer.processor = answers = FencedAnswers(trainer.processor)
        shutil.rmtree(pool.work_root)
        Path(pool.work_root).write_text("not a directory")  # nowhere to start a replacement worker
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        time.sleep(0.3)
        with pytest.raises(RenderInfraError) as stopped:
            trainer.train()
        message = str(stopped.value)
        assert "4 of 4 rollout renders" in message and "first" in message, message
        assert "svg:" in message and "died outside a job" in message and "NotADirectoryError" in message, message
        assert answers.decoded >= 4  # the responses did reach the renderer
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step was trained on it
        assert trainer.start_step == 0 and int(trainer.state["step"]) == 0
    finally:
        if os.path.isfile(pool.work_root):
            os.remove(pool.work_root)
            os.makedirs(pool.work_root)
        trainer.close()
