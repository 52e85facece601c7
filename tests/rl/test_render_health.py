"""Infrastructure failures stop ViRL with the cause named, and never act as the model's failure below the limit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from renderers import RenderInfraError, RenderResult, sandbox
from vinci_jax.rl.render_health import INFRA_STATUS, RenderHealth, neutralise_infra

ROOT = Path(__file__).resolve().parents[2]


def test_first_step_infra_stops_and_names_the_cause_per_language():
    statuses = ["ok", INFRA_STATUS, "render_error", "no_code"]
    results = [RenderResult("ok", b"x", "", 0.0), RenderResult("infra", None, "chromium failed to start", 0.0),
               RenderResult("error", None, "SyntaxError", 0.0), None]  # fmt: skip
    languages = ["svg", "html", "python", None]
    with pytest.raises(RenderInfraError, match=r"1 of 3 rollout renders .*html: chromium failed to start \(x1\)"):
        RenderHealth().check(statuses, results, languages, first_step=True)
    metrics = RenderHealth().check(["ok"] * 30 + [INFRA_STATUS], [None] * 30 + [results[1]], [None] * 30 + ["html"],
                                   first_step=False)  # fmt: skip
    assert metrics["render/infra"] == 1 and metrics["render/infra/html"] == 1
    assert metrics["render/infra_fraction"] == pytest.approx(1 / 31)


def test_infra_rows_get_their_groups_mean_so_their_advantage_is_zero():
    rewards = np.asarray([1.0, 0.2, 0.1, 0.5, 0.5, 0.1], np.float32)
    prompt_of_row = np.asarray([0, 0, 0, 1, 1, 1])
    statuses = ["ok", "ok", INFRA_STATUS, INFRA_STATUS, INFRA_STATUS, INFRA_STATUS]
    out = neutralise_infra(rewards, prompt_of_row, statuses)
    assert out[:3].tolist() == pytest.approx([1.0, 0.2, 0.6])
    assert out[3:].tolist() == pytest.approx([0.5, 0.5, 0.1])  # an all-infra group is left alone


@pytest.mark.slow  # a ViRL command-line start (jax import + pool) is ~25 s idle
@pytest.mark.skipif(not sandbox.is_root(), reason="breaks Chromium in a private mount namespace")
def test_tiny_virl_with_a_broken_browser_stops_at_start_naming_it(tiny_svg_rl_corpus, tmp_path):
    """A real fault: /usr/bin/chromium replaced by /bin/false (bind-mounted in the run's own mount namespace)."""
    from renderers.lang_html import CHROMIUM

    def broken_browser() -> None:
        sandbox.unshare(sandbox.CLONE_NEWNS)
        sandbox.mount(None, "/", None, sandbox.MS_REC | sandbox.MS_PRIVATE)
        sandbox.mount("/bin/false", CHROMIUM, None, sandbox.MS_BIND)

    args = [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/virl.py:tiny",
            f"--config.data.path={tiny_svg_rl_corpus}", f"--config.workdir={tmp_path / 'run'}",
            "--config.num_steps=1", "--config.render.num_workers=1", "--config.progress=False"]  # fmt: skip
    began = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=broken_browser)
    assert proc.returncode != 0
    assert "RenderInfraError" in proc.stderr and "chromium failed to start" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step was trained on a broken renderer
    assert time.monotonic() - began < 300
