"""A real multi-process run on one machine: 2 JAX processes on 127.0.0.1 (gloo collectives on CPU devices).

The text-only SFT preset runs in 2 processes x 2 devices and in 1 process x 4 devices: the losses agree step for
step, and the 2-process checkpoints restore in the 1-process run.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _args(workdir, steps):
    return [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/sft.py:standin",
            f"--config.workdir={workdir}", f"--config.num_steps={steps}", "--config.progress=False",
            "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=False"]  # fmt: skip


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_and_their_checkpoints_restore(tmp_path):
    port = _free_port()
    two = tmp_path / "two"
    procs = [
        subprocess.Popen(
            [*_args(two, 4), f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=ROOT,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    assert "process 0/2 devices=4 (local 2)" in outputs[0] and "process 1/2" in outputs[1]

    one = tmp_path / "one"
    single = subprocess.run(_args(one, 4), cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)

    resumed = subprocess.run(_args(two, 6), cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "sft finished at step 6 (started at 4)" in resumed.stdout
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["2", "4", "6"]  # nothing moved aside
