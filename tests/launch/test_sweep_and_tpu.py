"""Sweep expansion and the TPU VM command plans, run as a user would (dry runs and a real local sweep)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch import sweep, tpu_vm

ROOT = Path(__file__).resolve().parents[2]


def test_expand_is_the_cartesian_product_with_distinct_names(tmp_path):
    axes = [sweep.parse_axis("config.optim.lr=1e-6,3e-6"), sweep.parse_axis("rollout.n=8,16")]
    runs = sweep.expand("configs/virl.py:tiny", axes, str(tmp_path))
    assert len(runs) == 4
    assert len({r.name for r in runs}) == 4 and len({r.workdir for r in runs}) == 4
    assert runs[0].name == "virl-tiny-lr=1e-6-n=8"
    assert runs[3].overrides == (("config.optim.lr", "3e-6"), ("config.rollout.n", "16"))
    args = runs[1].launcher_args("configs/virl.py:tiny")
    assert f"--config.workdir={tmp_path / runs[1].name}" in args and "--config.rollout.n=16" in args


@pytest.mark.parametrize("spec", ["lr", "lr=", "=1,2", "a=,"])
def test_bad_sweep_specs_are_rejected(spec):
    with pytest.raises(ValueError, match="bad --sweep"):
        sweep.parse_axis(spec)


def test_local_sweep_runs_each_combination_with_its_own_workdir(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.sweep",
            "--config",
            "configs/demo.py",
            "--mode",
            "local",
            "--workdir_root",
            str(tmp_path),
            "--sweep",
            "config.seed=1,2",
            "--",
            "--config.stages=env",  # the demo's default stages train; the sweep only needs a quick job
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert [s["overrides"]["config.seed"] for s in summary] == ["1", "2"]
    assert all(s["returncode"] == 0 for s in summary)
    assert "seed: 2" in proc.stdout and f"workdir: {tmp_path}/demo-seed=2" in proc.stdout


def test_tpu_dry_run_prints_every_command_and_runs_none(capsys):
    assert (
        tpu_vm.main(
            ["create", "--name", "vj", "--zone", "z1", "--accelerator", "v5p-32", "--queued", "--spot", "--dry_run"]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gcloud compute tpus queued-resources create vj --node-id=vj --zone=z1")
    assert "--spot" in out[0] and "describe vj" in out[1]
    assert tpu_vm.main(["setup", "--name", "vj", "--zone", "z1", "--dry_run"]) == 0
    setup = capsys.readouterr().out.splitlines()
    assert setup[0].startswith("git archive") and "--worker=all" in setup[1]
    assert any("pip install -q -e" in line and "[tpu]" in line for line in setup)
    assert (
        tpu_vm.main(
            [
                "run",
                "--name",
                "vj",
                "--zone",
                "z1",
                "--dry_run",
                "--",
                "python3",
                "-m",
                "vinci_jax.launch",
                "--config",
                "configs/virl.py",
            ]
        )
        == 0
    )
    run = capsys.readouterr().out
    assert "--worker=all" in run and "python3 -m vinci_jax.launch --config configs/virl.py" in run


def test_tpu_mode_sweep_dispatches_one_run_per_combination(capsys):
    code = sweep.main(
        [
            "--config",
            "configs/virl.py",
            "--mode",
            "tpu",
            "--dry_run",
            "--tpu_name",
            "vj",
            "--zone",
            "z1",
            "--sweep",
            "config.optim.lr=1e-6,3e-6",
        ]
    )
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gcloud")]
    assert len(lines) == 2 and all("--distributed=on" in line for line in lines)
    assert "--config.optim.lr=3e-6" in lines[1]
