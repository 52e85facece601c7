"""`make demo`'s job at smoke size: every stage runs for real and leaves its report and export behind."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_smoke_runs_every_stage(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/demo.py:smoke", f"--config.workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("env", "data", "sft", "virl"):
        assert f"[demo] {stage}:" in proc.stdout, stage
    for moment in ("random init (before SFT)", "after SFT (before ViRL)", "after ViRL"):
        assert f"[demo] held-out, {moment}: execution" in proc.stdout, moment
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert {"random_init", "after_sft", "after_virl"} <= set(summary)
    assert 0.0 <= summary["after_virl"]["execution"] <= 1.0
    assert (tmp_path / "report" / "heldout_after_virl.png").stat().st_size > 0
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "export" / "tokenizer.json").is_file()
