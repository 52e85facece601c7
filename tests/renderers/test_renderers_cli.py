"""The two CLIs: exit codes, PNG files and results.jsonl in input order."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "renderers", *args], capture_output=True, text=True, timeout=180)


def test_render_writes_png_and_fails_loudly(tmp_path):
    good = tmp_path / "icon.svg"
    good.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect width="4" height="4" fill="red"/></svg>'
    )
    out = tmp_path / "icon.png"
    done = run_cli("render", "--lang", "svg", str(good), "-o", str(out), "--width", "64", "--height", "32")
    assert done.returncode == 0, done.stderr
    with Image.open(out) as img:
        assert img.size == (64, 32) and img.convert("RGB").getpixel((32, 16)) == (255, 0, 0)

    bad = tmp_path / "broken.svg"
    bad.write_text("<svg")
    done = run_cli("render", "--lang", "svg", str(bad), "-o", str(tmp_path / "broken.png"))
    assert done.returncode != 0 and "broken.svg" in done.stderr and "error" in done.stderr
    assert not (tmp_path / "broken.png").exists()

    done = run_cli("render", "--lang", "mermaid", str(bad), "-o", str(tmp_path / "m.png"))
    assert done.returncode != 0 and "unsupported" in done.stderr


def test_render_batch_manifest(tmp_path):
    rows = [
        {"id": "circle", "lang": "svg", "code": '<svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg>'},
        {"id": "flow", "lang": "mermaid", "code": "graph TD; A-->B"},
        {"id": "bad", "lang": "svg", "code": "<svg"},
        {"id": "small", "lang": "svg", "code": '<svg xmlns="http://www.w3.org/2000/svg"/>', "options": {"width": 8}},
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    done = run_cli("render-batch", str(manifest), "--out", str(out), "--workers", "1")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["circle", "flow", "bad", "small"]
    assert [r["status"] for r in results] == ["ok", "unsupported", "error", "ok"]
    assert all(set(r) >= {"id", "status", "error", "seconds"} for r in results)
    assert sorted(p.name for p in out.glob("*.png")) == ["circle.png", "small.png"]
    with Image.open(out / "small.png") as img:
        assert img.size == (8, 336)
