"""Tiny SFT and ViRL runs (default configs) on freshly converted published-layout files finish: the ViRL config's
held-out split (`test`) is missing after a conversion without --test-fraction and falls back to `train` with a
warning instead of crashing after the first step."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vinci_jax.data.__main__ import main as data_cli

ROOT = Path(__file__).resolve().parents[2]


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.NEAREST).save(out, "PNG")
    return out.getvalue()


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vinci_jax.launch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.mark.slow  # two tiny training processes
def test_tiny_sft_and_virl_on_converted_files_finish(tmp_path):
    flat = pa.table({
        "user_content": [f"Write Python matplotlib code that draws chart {i}." for i in range(16)],
        "assistant_content": [f"```python\nimport matplotlib.pyplot as plt\nplt.bar([1], [{i}])\n```"
                              for i in range(16)],
        "image": [_png(i) for i in range(16)],
    })  # fmt: skip
    pq.write_table(flat, tmp_path / "chart2code.parquet")
    rl = pa.table({
        "problem": [f"<image>Write the SVG code for picture {i}." for i in range(8)],
        "answer": [f"<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'><rect width='{8 + i}' "
                   "height='20' fill='red'/></svg>" for i in range(8)],
        "images": [[{"bytes": _png(100 + i), "path": None}] for i in range(8)],
    })  # fmt: skip
    pq.write_table(rl, tmp_path / "virl_svg.parquet")
    assert data_cli(["convert", str(tmp_path / "chart2code.parquet"), "--out", str(tmp_path / "sft")]) == 0
    assert data_cli(["convert", str(tmp_path / "virl_svg.parquet"), "--out", str(tmp_path / "rl")]) == 0
    assert json.loads((tmp_path / "rl" / "stats.json").read_text())["split"] == {"train": 8}

    _run("--config", "configs/sft.py:tiny", f"--config.data.train_path={tmp_path / 'sft'}",
         f"--config.workdir={tmp_path / 'sft_run'}", "--config.num_steps=2", "--config.data.seq_len=128",
         "--config.progress=False")  # fmt: skip
    assert len((tmp_path / "sft_run" / "metrics.jsonl").read_text().splitlines()) == 2

    proc = _run("--config", "configs/virl.py:tiny", f"--config.data.path={tmp_path / 'rl'}",
                f"--config.workdir={tmp_path / 'virl_run'}", "--config.num_steps=1",
                "--config.data.prompts_per_step=2", "--config.rollout.n=2", "--config.rollout.max_new_tokens=8",
                "--config.eval.prompts=2", "--config.render.num_workers=1", "--config.progress=False")  # fmt: skip
    assert "split 'test' is not in" in proc.stderr and "[virl] held-out after:" in proc.stdout
