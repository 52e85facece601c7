"""The published layouts convert as released: flat VinciCoder SFT (binary and struct images, bare and fenced code),
ms-swift messages without markers, EasyR1 RL with every image encoding; bad rows counted; empty files fail loudly;
a killed conversion resumes to the same bytes; parallel and serial runs agree; duplicates across units dropped."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from vinci_data import convert as convert_lib
from vinci_data.convert import ConvertError, convert
from vinci_data.records import list_shards, read_records, read_stats

from vinci_jax.data.__main__ import main as data_cli


def _png(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _flat_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        flawed = f"```python\nplt.bar([1], [{i}]\n```"
        prompt = f"Fix this matplotlib code so that it draws the chart in the image.\n{flawed}"
        fenced = f"```python\nimport matplotlib.pyplot as plt\nplt.bar([1], [{i}])\n```"
        answer = fenced if i % 2 else f"plt.plot([{i}])"
        rows.append({"user_content": prompt, "assistant_content": answer, "image": {"bytes": _png(i), "path": None}})
    return rows


def _write(path, rows: list[dict], schema: pa.Schema, row_group_size: int | None = None) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path), row_group_size=row_group_size)
    return str(path)


FLAT_STRUCT = pa.schema([("user_content", pa.string()), ("assistant_content", pa.string()), ("image", IMAGE_STRUCT)])


def test_flat_vincicoder_sft_converts_with_binary_and_struct_images(tmp_path):
    rows = _flat_rows(4)
    bad = [
        {"user_content": "Write matplotlib code.", "assistant_content": "  ",
         "image": {"bytes": _png(50), "path": None}},
        {"user_content": "Write matplotlib code.", "assistant_content": "x",
         "image": {"bytes": b"\x89PNG junk", "path": None}},
        {"user_content": "Write matplotlib code.", "assistant_content": "x", "image": None},
        {"user_content": "Write matplotlib code.", "assistant_content": "x",
         "image": {"bytes": _png(51, (300, 300)), "path": None}},
        {"user_content": None, "assistant_content": "x", "image": {"bytes": _png(52), "path": None}},
    ]  # fmt: skip
    refine = _write(tmp_path / "chart2code_refine.parquet", rows + bad, FLAT_STRUCT)
    binary_rows = [{"user_content": "Write the SVG code for this picture.", "assistant_content": "```svg\n<svg/>\n```",
                    "image": _png(60)}]  # fmt: skip
    binary_schema = pa.schema([("user_content", pa.string()), ("assistant_content", pa.string()),
                               ("image", pa.binary())])  # fmt: skip
    svg = _write(tmp_path / "img2svg_1.parquet", binary_rows, binary_schema)

    out = tmp_path / "out"
    stats = convert([refine, svg], str(out), max_skip_fraction=0.9, max_image_pixels=200 * 200, workers=1)
    assert stats["layouts"] == {"chart2code_refine.parquet": "vinci_sft", "img2svg_1.parquet": "vinci_sft"}
    assert stats["skipped"] == {"empty_answer": 1, "huge_image": 1, "missing_fields": 1, "missing_image": 1,
                                "undecodable_image": 1}  # fmt: skip
    assert stats["skip_examples"]["huge_image"] == ["chart2code_refine.parquet:7 300x300 is over 40000 pixels"]
    records = {r.id: r for r in read_records(out)}
    assert sorted(records) == [f"chart2code_refine-{i}" for i in range(4)] + ["img2svg_1-0"]
    for i, row in enumerate(rows):
        record = records[f"chart2code_refine-{i}"]
        assert (record.domain, record.task, record.language) == ("chart", "refine", "python")
        assert record.messages[0] == {"role": "user", "content": "<image>" + row["user_content"]}
        fenced = row["assistant_content"] if i % 2 else f"```python\nplt.plot([{i}])\n```"  # bare code gets a fence
        assert record.messages[1] == {"role": "assistant", "content": fenced}
        np.testing.assert_array_equal(_pixels(record.images[0]), _pixels(_png(i)))
    svg_record = records["img2svg_1-0"]
    assert (svg_record.domain, svg_record.task, svg_record.language) == ("svg", "generate", "svg")
    assert svg_record.images == [_png(60)] and svg_record.prompt() == "<image>Write the SVG code for this picture."


def test_messages_without_markers_and_wrong_types(tmp_path):
    rows = [
        {"messages": json.dumps([{"role": "user", "content": "Write HTML code for this web page."},
                                 {"role": "assistant", "content": "```html\n<p>1</p>\n```"}]),
         "images": [_png(1)]},
        {"messages": json.dumps({"role": "user"}), "images": [_png(2)]},
        {"messages": "not json", "images": [_png(3)]},
    ]  # fmt: skip
    path = _write(tmp_path / "web2html_refine.parquet", rows,
                  pa.schema([("messages", pa.string()), ("images", pa.list_(pa.binary()))]))  # fmt: skip
    out = tmp_path / "out"
    assert data_cli(["convert", path, "--out", str(out), "--max_skip_fraction", "0.9"]) == 0
    stats = read_stats(out)
    assert stats["layouts"] == {"web2html_refine.parquet": "messages"} and stats["skipped"] == {"wrong_type": 2}
    (record,) = read_records(out)
    assert record.messages[0]["content"] == "<image>Write HTML code for this web page."  # ms-swift's insertion
    assert (record.domain, record.task, record.language) == ("web", "refine", "html")


def test_easyr1_images_as_struct_list_bytes_and_paths(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(7))
    rows = [
        {"problem": "<image>Write TikZ code for this figure.", "answer": "\\draw (0,0) -- (1,1);",
         "images": [{"bytes": _png(5), "path": "x.png"}]},
        {"problem": "Write TikZ code for this figure.", "answer": "```latex\n\\draw (0,0) circle (1);\n```",
         "images": [{"bytes": None, "path": "a.png"}]},
        {"problem": "<image>Write TikZ code.", "answer": "\\draw (1,1);", "images": []},
    ]  # fmt: skip
    schema = pa.schema([("problem", pa.string()), ("answer", pa.string()), ("images", pa.list_(IMAGE_STRUCT))])
    path = _write(tmp_path / "tikz_rl.parquet", rows, schema)
    stats = convert([path], str(tmp_path / "out"), "rl", max_skip_fraction=0.5, workers=1)
    assert stats["kind"] == "rl" and stats["skipped"] == {"missing_image": 1}
    records = {r.id: r for r in read_records(tmp_path / "out")}
    assert records["tikz_rl-0"].images == [_png(5)] and records["tikz_rl-1"].images == [_png(7)]
    assert records["tikz_rl-1"].problem == "<image>Write TikZ code for this figure."
    assert records["tikz_rl-1"].answer == "\\draw (0,0) circle (1);"  # the whole-answer fence is unwrapped
    assert {(r.domain, r.language) for r in records.values()} == {("tikz", "latex")}


def test_files_that_yield_nothing_or_fit_no_layout_fail_loudly(tmp_path, capsys):
    rows = [{"user_content": "Write code.", "assistant_content": "", "image": {"bytes": _png(i), "path": None}}
            for i in range(3)]  # fmt: skip
    empty = _write(tmp_path / "chart_empty.parquet", rows, FLAT_STRUCT)
    assert data_cli(["convert", empty, "--out", str(tmp_path / "o1")]) == 1
    printed = capsys.readouterr()
    assert "chart_empty.parquet yielded no records" in printed.err and "user_content" in printed.err
    assert json.loads(printed.out)["skipped"] == {"empty_answer": 3}

    mostly_bad = _write(tmp_path / "chart_bad.parquet", rows + _flat_rows(2), FLAT_STRUCT)
    with pytest.raises(ConvertError, match="skipped 3 of 5 rows"):
        convert([mostly_bad], str(tmp_path / "o2"), workers=1)

    other = _write(tmp_path / "other.parquet", [{"text": "hi"}], pa.schema([("text", pa.string())]))
    assert data_cli(["convert", other, "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "['text'] fit no known layout" in err and "vinci_sft (user_content, assistant_content, image)" in err


def _shard_bytes(directory) -> dict[str, bytes]:
    paths = [p for split in ("train", "val", "test") for p in list_shards(directory, split)]
    return {os.path.basename(p): open(p, "rb").read() for p in paths}


def test_killed_conversion_resumes_to_the_same_output_and_parallel_matches_serial(tmp_path, monkeypatch):
    rows = _flat_rows(24)
    rows[20] = dict(rows[3])  # a duplicate of a row of an earlier unit
    path = _write(tmp_path / "chart2code.parquet", rows, FLAT_STRUCT, row_group_size=4)
    kwargs = dict(rows_per_shard=8, val_fraction=0.2, test_fraction=0.2)

    reference = convert([path], str(tmp_path / "serial"), workers=1, **kwargs)
    assert reference["shards"] == 3 and reference["written"] == 23 and reference["duplicates"] == {"chart": 1}
    assert set(reference["splits"]) == {"train", "val", "test"}

    real_unit = convert_lib.convert_unit

    def dies_on_unit_2(unit, *args):
        if unit.index == 2:
            raise KeyboardInterrupt("killed")
        return real_unit(unit, *args)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(convert_lib, "convert_unit", dies_on_unit_2)
    with pytest.raises(KeyboardInterrupt):
        convert([path], str(resumed), workers=1, **kwargs)
    first_units = {n: os.stat(resumed / n).st_mtime_ns for n in _shard_bytes(resumed)}
    assert first_units and all("-00002-of-" not in n for n in first_units)
    monkeypatch.setattr(convert_lib, "convert_unit", real_unit)
    again = convert([path], str(resumed), workers=1, **kwargs)
    assert {n: os.stat(resumed / n).st_mtime_ns for n in first_units} == first_units  # finished units not redone
    assert _shard_bytes(resumed) == _shard_bytes(tmp_path / "serial") and again == reference

    parallel = convert([path], str(tmp_path / "parallel"), workers=2, **kwargs)
    assert _shard_bytes(tmp_path / "parallel") == _shard_bytes(tmp_path / "serial") and parallel == reference
