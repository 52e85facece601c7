"""`make demo`'s job at smoke size: every stage runs for real and leaves its report and export behind, and the
report renders in Chromium with every image loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"chart", "svg", "web", "tikz", "chem"}
DEVICE_FLAG = "--xla_force_host_platform_device_count=8"  # set by tests/conftest.py
REPORT_FILES = ("summary.json", "report.html", "bars.png", "curve.png", "contact_sheet.png")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    # as `make demo` runs it: one CPU device, not the suite's 8 fake ones (with those, five-domain SFT at smoke
    # size peaked at ~10 GB and was OOM-killed on the shared 24 GB machine)
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(DEVICE_FLAG, "").strip()}
    proc = subprocess.run(
        [sys.executable, "-m", "vinci_jax.launch", "--config", "configs/demo.py:smoke", f"--config.workdir={workdir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc.stdout


def test_demo_smoke_runs_every_stage_on_all_domains_with_anchors(smoke):
    workdir, stdout = smoke
    for stage in ("env", "data", "sft", "virl"):
        assert f"[demo] {stage}: starting (budget" in stdout, stage
        assert f"[demo] {stage}: " in stdout and "s budget" in stdout, stage
    for moment in ("random init (before SFT)", "after SFT (before ViRL)", "after ViRL"):
        assert f"[demo] held-out, {moment}: all   reward" in stdout, moment
    assert "ViRL gain over SFT (normalised reward, paired bootstrap 95% interval)" in stdout
    for name in REPORT_FILES:
        assert (workdir / "report" / name).stat().st_size > 0, name
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert set(summary["held_out"]) == {"random_init", "after_sft", "after_virl"}
    table = summary["held_out"]["after_sft"]["table"]
    assert DOMAINS <= set(table), table.keys()  # the held-out set is stratified over all five domains
    for row in table.values():
        assert row["gold"] >= 0.99 and row["trivial"] <= 0.4
        assert row["normalised"] == pytest.approx((row["reward"] - row["trivial"]) / (row["gold"] - row["trivial"]))
    gain = summary["gains"]["ViRL - SFT"]["all"]
    assert gain["low"] <= gain["gain"] <= gain["high"] and gain["n"] == table["all"]["prompts"]
    assert (workdir / "export" / "config.json").is_file() and (workdir / "export" / "tokenizer.json").is_file()
    # the demo's vocabulary travels with the export: its config's LM head is the compact one, with the map to Qwen ids
    export_config = json.loads((workdir / "export" / "config.json").read_text())
    id_map = json.loads((workdir / "export" / "demo_vocab.json").read_text())
    assert len(id_map["qwen_ids"]) <= export_config["text_config"]["vocab_size"] == id_map["vocab_size"] < 10_000
    corpus = json.loads((workdir / "corpus" / "stats.json").read_text())
    assert corpus["config"]["simple"] and corpus["redrawn"] == {}, corpus  # every simple program renders first time


def test_report_renders_in_chromium_with_every_image_loaded(smoke):
    from playwright.sync_api import sync_playwright

    from renderers.lang_html import CHROMIUM, CHROMIUM_FLAGS

    report = smoke[0] / "report" / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page()
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
            )
            heading = page.inner_text("h1")
        finally:
            browser.close()
    assert heading == "vinci-jax demo"
    assert {src for src, _, _ in images} == {"bars.png", "curve.png", "contact_sheet.png"}
    assert all(done and width > 0 for _, done, width in images), images
