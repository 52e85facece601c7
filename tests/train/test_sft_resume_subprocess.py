"""Exact resume through real processes: the launcher is killed with SIGKILL mid-run, restarted, preempted with
SIGTERM, restarted again; the losses logged in WORKDIR/metrics.jsonl then equal an uninterrupted run step for step.

Uses the tiny Qwen2.5-VL and the real Grain SFT pipeline; the runs share a persistent compilation cache so only the
first one pays for compiling.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 14


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # one CPU device, like `python -m vinci_jax.launch` on a laptop
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _launch(workdir: Path, corpus: Path, cache: Path, num_steps: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "vinci_jax.launch",
        "--config",
        str(REPO / "configs" / "sft.py") + ":tiny",
        f"--config.workdir={workdir}",
        f"--config.num_steps={num_steps}",
        f"--config.data.train_path={corpus}",
        "--config.data.seq_len=128",  # the test corpus has short samples
        "--config.optimizer.schedule=constant",  # the same learning rate whatever num_steps is
        "--config.checkpoint.every_steps=3",
        "--config.eval_every=0",
        "--config.progress=False",
    ]
    return subprocess.Popen(command, cwd=REPO, env=_env(cache), stdout=log.open("w"), stderr=subprocess.STDOUT)


def _losses(workdir: Path) -> dict[int, float]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut short
        out[int(record["step"])] = record["loss"]
    return out


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 400.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"launcher exited early (rc={proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 400.0) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _checkpoint_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def test_kill_and_preemption_resume_exactly(sft_corpus, tmp_path):
    cache = tmp_path / "jax_cache"
    reference_dir, workdir = tmp_path / "reference", tmp_path / "interrupted"

    _finish(_launch(reference_dir, sft_corpus, cache, STEPS, tmp_path / "reference.log"), tmp_path / "reference.log")
    reference = _losses(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    # 1) SIGKILL once a checkpoint exists and training has moved past it (a save may well be in flight)
    log = tmp_path / "killed.log"
    proc = _launch(workdir, sft_corpus, cache, 400, log)
    _wait_for(lambda: _checkpoint_steps(workdir) and max(_losses(workdir), default=0) >= 5, proc, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(_losses(workdir))

    # 2) restart: resumes from the newest complete checkpoint; then SIGTERM (preemption) -> final save, exit 0
    log = tmp_path / "preempted.log"
    proc = _launch(workdir, sft_corpus, cache, 400, log)
    _wait_for(lambda: "resumed from checkpoint step" in log.read_text(), proc, log)
    resumed_at = int(log.read_text().split("resumed from checkpoint step")[1].split()[0])
    assert 3 <= resumed_at <= killed_at and resumed_at % 3 == 0
    _wait_for(lambda: max(_losses(workdir), default=0) >= resumed_at + 2, proc, log)
    proc.send_signal(signal.SIGTERM)
    text = _finish(proc, log)
    preempted_at = int(text.split("preempted: saved checkpoint at step")[1].split()[0])
    assert preempted_at in _checkpoint_steps(workdir)
    assert preempted_at < STEPS, "the run got too far before SIGTERM for the rest of the test"

    # 3) restart again and finish: resumes exactly at the preemption checkpoint
    log = tmp_path / "final.log"
    text = _finish(_launch(workdir, sft_corpus, cache, STEPS, log), log)
    assert f"resumed from checkpoint step {preempted_at}" in text

    resumed = _losses(workdir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert [resumed[s] for s in range(1, STEPS + 1)] == [reference[s] for s in range(1, STEPS + 1)]
    assert resumed[STEPS] < resumed[1]
