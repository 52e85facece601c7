"""The launcher as a user runs it: a subprocess with a config file and overrides."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vinci_jax.launch", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_demo_env_stage_runs_with_override(tmp_path):
    proc = _launch("--config", "configs/demo.py", "--config.stages=env", f"--config.workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert f"workdir: {tmp_path}" in proc.stdout
    assert "backend=cpu" in proc.stdout
    assert "[demo] env: mesh" in proc.stdout and "[demo] done" in proc.stdout


def test_unknown_preset_and_unknown_override_fail():
    bad_preset = _launch("--config", "configs/demo.py:nope")
    assert bad_preset.returncode != 0 and "unknown preset" in bad_preset.stderr
    bad_key = _launch("--config", "configs/demo.py", "--config.no_such_key=1")
    assert bad_key.returncode != 0


def test_unknown_job_fails_clearly():
    proc = _launch("--config", "configs/demo.py", "--config.job=nonsense")
    assert proc.returncode == 2
    assert "unknown job 'nonsense'" in proc.stderr
