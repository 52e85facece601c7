"""Loaders read small fixtures shaped like each public release; the CLI scores predictions on the synthetic split
and writes results, summary, table and gallery; `--model` generates with the sampler (slow)."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vinci_jax.evaluate import load_suite

ROOT = Path(__file__).resolve().parents[2]
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 3, 2], color='red')\nplt.title('T')\nplt.show()\n"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="20" height="20" fill="red"/></svg>'


def _png(colour="white", size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_chartmimic_and_design2code_paired_files(tmp_path):
    ori = tmp_path / "chartmimic" / "ori_500"
    ori.mkdir(parents=True)
    for name in ("line_1", "bar_2"):
        (ori / f"{name}.py").write_text(CHART)
        (ori / f"{name}.png").write_bytes(_png())
    (ori / "orphan_3.py").write_text(CHART)  # no picture: skipped and reported
    report = load_suite("chartmimic", str(tmp_path / "chartmimic"))
    assert sorted(s.id for s in report.samples) == ["bar_2", "line_1"]
    assert report.skipped and "orphan_3.py" in report.skipped[0]
    assert all(s.language == "python" and s.gold_code == CHART and s.target_image().size == (32, 24)
               for s in report.samples)  # fmt: skip

    d2c = tmp_path / "design2code"
    d2c.mkdir()
    for n in (10, 2):
        (d2c / f"{n}.html").write_text(f"<html><body><h1>Page {n}</h1></body></html>")
        (d2c / f"{n}.png").write_bytes(_png())
    report = load_suite("design2code", str(d2c), limit=1)
    assert [s.id for s in report.samples] == ["2"] and report.samples[0].language == "html"


def test_row_file_releases(tmp_path):
    table = pa.table({"code": [CHART], "image": [{"bytes": _png("red"), "path": None}],
                      "instruction": ["Redraw this plot with Python matplotlib."], "url": ["u"]})  # fmt: skip
    pq.write_table(table, tmp_path / "plot2code.parquet")
    (p2c,) = load_suite("plot2code", str(tmp_path / "plot2code.parquet")).samples
    assert p2c.gold_code == CHART and p2c.target_image().getpixel((0, 0)) == (255, 0, 0)
    assert p2c.prompt.startswith("<image>") and "matplotlib" in p2c.prompt

    (tmp_path / "unisvg").mkdir()
    (tmp_path / "unisvg" / "test.jsonl").write_text(json.dumps({"id": "s1", "svg": SVG}) + "\n" + "{}\n")
    report = load_suite("unisvg", str(tmp_path / "unisvg"))
    assert [s.id for s in report.samples] == ["s1"] and report.samples[0].image is None  # rendered from gold
    assert len(report.skipped) == 1

    (tmp_path / "tikz.jsonl").write_text(json.dumps({"code": r"\tikz \draw (0,0)--(1,1);", "image": "a.png",
                                                     "caption": "a line"}) + "\n")  # fmt: skip
    (tmp_path / "a.png").write_bytes(_png("blue"))
    (tikz,) = load_suite("tikz", str(tmp_path / "tikz.jsonl")).samples
    assert tikz.language == "latex" and tikz.meta["caption"] == "a line" and tikz.image == _png("blue")

    (tmp_path / "mol.csv").write_text("smiles,image\nc1ccccc1O,\n")
    (mol,) = load_suite("molecules", str(tmp_path / "mol.csv")).samples
    assert mol.meta["smiles"] == "c1ccccc1O" and "MolFromSmiles('c1ccccc1O')" in mol.gold_code


def test_chartx_annotation(tmp_path):
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "bar_1.png").write_bytes(_png())
    entries = [{"imgname": "bar_1", "img": "png/bar_1.png", "chart_type": "bar", "redrawing": {"output": CHART}},
               {"imgname": "bad", "img": "png/missing.png"}]  # fmt: skip
    (tmp_path / "ChartX_annotation.json").write_text(json.dumps(entries))
    report = load_suite("chartx", str(tmp_path))
    assert [s.id for s in report.samples] == ["bar_1"] and report.samples[0].meta["chart_type"] == "bar"
    assert len(report.skipped) == 1 and "bad" not in report.samples[0].id


def _synthetic_split(path: Path) -> None:
    from vinci_data.records import Record, RecordWriter

    with RecordWriter(path) as writer:
        for rid, domain, language, code in (("c1", "chart", "python", CHART), ("s1", "svg", "svg", SVG)):
            prompt = f"<image>\nWrite {language} code for this."
            writer.write(Record(id=rid, domain=domain, task="generate", language=language, images=[_png()],
                                problem=prompt, answer=code, split="test"))  # fmt: skip


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vinci_jax.evaluate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_cli_scores_predictions_on_the_synthetic_split(tmp_path):
    data, out = tmp_path / "synth", tmp_path / "report"
    _synthetic_split(data)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"id": "c1", "code": "import matplotlib.pyplot as plt\n1 / 0\n"}) + "\n"
                           + json.dumps({"id": "s1", "response": f"Here:\n```svg\n{SVG}\n```"}) + "\n")  # fmt: skip
    proc = _cli("--suite", "synthetic", "--data", data, "--predictions", predictions, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["execution_rate"] == 0.5
    rows = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert not rows["c1"]["executed"] and "ZeroDivisionError" in rows["c1"]["error"]
    assert rows["c1"]["metrics"]["low_level"] == 0.0  # gold ran, so the crash scores 0, not n/a
    assert rows["s1"]["executed"] and 0.0 <= rows["s1"]["metrics"]["ssim"] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_domain"]["chart"]["num_samples"] == 1 and "lpips" in summary["not_computed"]
    assert "| chart | 1 |" in (out / "summary.md").read_text()
    gallery = (out / "gallery.html").read_text()
    assert "ZeroDivisionError" in gallery and "<details>" in gallery and "images/00001-s1-pred.png" in gallery
    assert (out / "images" / "00001-s1-pred.png").is_file() and not (out / "images" / "00000-c1-pred.png").exists()


def test_cli_reports_bad_inputs(tmp_path):
    proc = _cli("--suite", "chartmimic", "--data", tmp_path / "nowhere", "--predictions", "x", "--out", tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_cli_generates_with_a_checkpoint_and_evaluate_policy(tiny_qwen25_chat_dir, tmp_path):
    data, out = tmp_path / "synth", tmp_path / "report"
    _synthetic_split(data)
    proc = _cli("--suite", "synthetic", "--data", data, "--model", tiny_qwen25_chat_dir, "--out", out,
                "--max_new_tokens", "8", "--limit", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    assert row["status"] == "no_code" and "response" in row  # a random model writes no fenced block

    from vinci_data.records import read_records

    from vinci_jax.evaluate import evaluate_policy
    from vinci_jax.policy import load_policy

    model, processor = load_policy(tiny_qwen25_chat_dir)
    summary = evaluate_policy(model, processor, list(read_records(data, "test")), max_new_tokens=4)
    assert summary["num_samples"] == 2 and summary["execution_rate"] == 0.0


@pytest.mark.slow
def test_gold_answers_of_the_built_synthetic_corpus_score_perfectly(tmp_path):
    """The real synthetic generators and build (targets rendered by the RenderPool with each domain's options):
    their gold code, scored as predictions, gets 1 on every metric of its domain."""
    from vinci_data.records import read_records

    data, out = tmp_path / "synth", tmp_path / "report"
    built = subprocess.run([sys.executable, "-m", "vinci_jax.data", "build-synth", "--out", str(data), "--size", "120",
                            "--refine-fraction", "0", "--workers", "2"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stderr
    records = list(read_records(data, "test"))
    predictions = tmp_path / "gold.jsonl"
    predictions.write_text("".join(json.dumps({"id": r.id, "code": r.answer}) + "\n" for r in records))
    proc = _cli("--suite", "synthetic", "--data", data, "--predictions", predictions, "--out", out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["execution_rate"] == 1.0 and len(summary["by_domain"]) >= 3
    for name, value in summary["metrics"].items():
        assert value == pytest.approx(1.0, abs=1e-5), name


def test_read_predictions_code_response_and_unknown_ids(tmp_path):
    from vinci_jax.evaluate import make_sample, read_predictions

    samples = [make_sample("unisvg", "svg", i, None, SVG) for i in ("a", "b", "c")]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (
        {"id": "a", "code": "<svg/>"},
        {"id": "b", "response": "```python\nx\n```\n```svg\n<svg id='b'/>\n```"},
        {"id": "zzz", "code": "cut by --limit"},
    )))  # fmt: skip
    codes, unknown = read_predictions(str(path), samples)
    assert codes == ["<svg/>", "<svg id='b'/>\n", None] and unknown == ["zzz"]
    path.write_text(json.dumps({"id": "nope", "code": ""}))
    with pytest.raises(ValueError, match="no prediction id matches"):
        read_predictions(str(path), samples)
