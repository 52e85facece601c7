"""Real multi-process runs on one machine: 2 JAX processes on 127.0.0.1 (gloo collectives on CPU devices).

Each run is compared with the same run in 1 process over the same total devices (4): the tiny SFT preset (images,
Grain pipeline, per-shard vision inputs) and the tiny ViRL preset from the command line, and a toy GRPO loop with
the real SVG renderer whose rewards vary, with host-local groups and with groups spread over the processes. The data
shards are fixed (data_shards=2), so 1 process reads exactly the batches the 2 processes read together, and the
checkpoints the 2-process runs write resume in 1 process where they stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("multihost_grpo_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_one(args: list[str]) -> str:
    proc = subprocess.run(args, cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _run_two(args: list[str], flag_style: str = "absl") -> list[str]:
    """The same command in processes 0 and 1 (2 CPU devices each) joined through a coordinator on 127.0.0.1."""
    port = _free_port()

    def flags(i: int) -> list[str]:
        if flag_style == "absl":
            return [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]
        return ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)]

    procs = [
        subprocess.Popen(
            [*args, *flags(i)], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + "\n---\n" + outputs[1][-3000:]
    return outputs


def _metrics(workdir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


# ---------------------------------------------------------------------------------------------------------- SFT
def _sft(workdir: Path, corpus: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/sft.py:tiny",
            f"--config.data.train_path={corpus}", f"--config.workdir={workdir}", f"--config.num_steps={steps}",
            "--config.data.global_batch_size=4", "--config.data.data_shards=2", "--config.data.seq_len=128",
            "--config.data.patches_per_row=128", "--config.eval_every=0", "--config.progress=False",
            "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=False"]  # fmt: skip


# slow (2.5 min): the 2-process ViRL test below covers the same data shards, checkpoints and 1-process resume
@pytest.mark.slow
def test_tiny_sft_in_two_processes_equals_one_and_resumes_in_one(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "train"))
    from conftest import write_corpus  # the trainer tests' chart corpus (images + matplotlib answers)

    corpus = write_corpus(tmp_path / "corpus", n=24)
    reference = tmp_path / "one"
    _run_one(_sft(reference, corpus, 5))
    two = tmp_path / "two"
    outputs = _run_two(_sft(two, corpus, 3))
    assert "process 0/2 devices=4 (local 2)" in outputs[0] and "process 1/2" in outputs[1]
    expected, got = _metrics(reference), _metrics(two)
    assert sorted(got) == [1, 2, 3]  # only process 0 writes metrics
    for step in (1, 2, 3):
        for key in ("loss", "grad_norm", "loss_tokens"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)
    assert not (two / "checkpoints" / "3" / "data_iter" / "process_0-of-1.json").exists()

    # 1 process resumes the 2-process checkpoint: both data shards continue where they stopped
    out = _run_one(_sft(two, corpus, 5))
    assert "resumed from checkpoint step 3" in out
    resumed = _metrics(two)
    for step in (4, 5):
        assert resumed[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5), step
        assert resumed[step]["loss_tokens"] == expected[step]["loss_tokens"], step


# ---------------------------------------------------------------------------------------------------------- ViRL
def _virl(workdir: Path, corpus: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/virl.py:tiny",
            f"--config.data.path={corpus}", f"--config.workdir={workdir}", f"--config.num_steps={steps}",
            "--config.data.prompts_per_step=2", "--config.data.data_shards=2", "--config.rollout.n=2",
            "--config.rollout.max_new_tokens=8", "--config.rollout.chunk_prompts=2", "--config.eval.prompts=2",
            "--config.checkpoint.every_steps=1", "--config.checkpoint.async_save=False", "--config.panel_every=0",
            "--config.render.num_workers=1", "--config.progress=False"]  # fmt: skip


def test_tiny_virl_in_two_processes_equals_one_and_resumes_in_one(tiny_svg_rl_corpus, tmp_path):
    reference = tmp_path / "one"
    _run_one(_virl(reference, tiny_svg_rl_corpus, 3))
    two = tmp_path / "two"
    outputs = _run_two(_virl(two, tiny_svg_rl_corpus, 2))
    assert "[virl] held-out after:" in outputs[0]
    expected, got = _metrics(reference), _metrics(two)
    assert sorted(got) == [1, 2]
    for step in (1, 2):
        for key in ("entropy", "param_norm", "response_len", "response_tokens", "reward", "groups_kept"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)

    _run_one(_virl(two, tiny_svg_rl_corpus, 3))  # restarts from the 2-process step-2 checkpoint
    assert sorted(_metrics(two)) == [1, 2, 3]
    for key in ("entropy", "param_norm", "response_len"):
        assert _metrics(two)[3][key] == pytest.approx(expected[3][key], rel=1e-5), key


# ---------------------------------------------------------------------------------------------------------- GRPO
@pytest.fixture(scope="module")
def toy_checkpoint(tiny_qwen25_dir):
    return tiny_qwen25_dir


@pytest.fixture(scope="module")
def one_process_toy(toy_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_one")
    _run_one([sys.executable, str(WORKER), str(toy_checkpoint), str(out)])
    return json.loads((out / "process_0.json").read_text())


@pytest.mark.parametrize("render_on", ["owner", "spread"])
def test_toy_grpo_scores_rollouts_on_their_hosts_and_equals_one_process(
    render_on, toy_checkpoint, one_process_toy, tmp_path
):
    _run_two([sys.executable, str(WORKER), str(toy_checkpoint), str(tmp_path), "--render_on", render_on], "argparse")
    hosts = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in range(2)]
    for step, reference in enumerate(one_process_toy["steps"]):
        mine = [h["steps"][step] for h in hosts]
        assert len(set(reference["rewards"])) > 2, "the toy rewards must differ within groups"
        for host in mine:  # every process ends the step with all rewards, equal to the 1-process run's
            assert host["rewards"] == pytest.approx(reference["rewards"], abs=1e-6)
            assert host["statuses"] == reference["statuses"]
            assert host["param_norm"] == pytest.approx(reference["param_norm"], rel=1e-5)
            with_code = [r for r in host["rendered_here"] if host["statuses"][r] != "no_code"]
            assert host["local_results"] == with_code  # it rendered its own rollouts (those with code) only
        rendered = [set(h["rendered_here"]) for h in mine]
        assert not rendered[0] & rendered[1] and rendered[0] | rendered[1] == set(range(len(reference["rewards"])))
        prompt_of_row = reference["prompt_of_row"]
        hosts_of_group = {p: {i for i in range(2) for r in rendered[i] if prompt_of_row[r] == p}
                          for p in set(prompt_of_row)}  # fmt: skip
        if render_on == "owner":  # host-local groups: the process that loaded the prompt renders all its rollouts
            assert all(len(h) == 1 for h in hosts_of_group.values()), hosts_of_group
        else:
            assert all(len(h) == 2 for h in hosts_of_group.values()), hosts_of_group
