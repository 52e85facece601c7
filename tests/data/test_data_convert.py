"""Public-format parquet (ms-swift SFT, EasyR1 RL) -> ArrayRecord: identical read-back, skips and duplicates counted."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from vinci_data.convert import convert
from vinci_data.records import read_records, read_stats

from vinci_jax.data.__main__ import main as data_cli


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _sft_row(i: int, image: bytes | str | dict, content: str | None = None) -> dict:
    code = content if content is not None else f"```python\nimport matplotlib.pyplot as plt\nplt.bar([1], [{i}])\n```"
    return {
        "messages": [
            {"role": "user", "content": f"<image>\nWrite Python matplotlib code for chart {i}."},
            {"role": "assistant", "content": code},
        ],
        "images": [image],
    }


def _write(path: str, rows: list[dict], schema: pa.Schema) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def test_messages_parquet_converts_and_reads_back_identically_with_skips_counted(tmp_path):
    # file 1: images as bytes, with a corrupt image, a missing-messages row, a row without a code block and a duplicate
    good_bytes = [_sft_row(i, _png(i)) for i in range(4)]
    rows = good_bytes + [
        _sft_row(10, b"not an image"),
        {"messages": None, "images": [_png(11)]},
        _sft_row(12, _png(12), content="Sorry, I cannot write that."),
        dict(good_bytes[1]),
    ]
    schema = pa.schema([("messages", MESSAGES), ("images", pa.list_(pa.binary()))])
    chart = _write(str(tmp_path / "chart2code.parquet"), rows, schema)
    # file 2: images as paths next to the parquet file (one missing) and more markers than images
    os.makedirs(tmp_path / "imgs")
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(100 + i))
    path_rows = [_sft_row(20 + i, f"imgs/{i}.png") for i in range(3)] + [_sft_row(23, "imgs/missing.png")]
    mismatch = _sft_row(24, "imgs/0.png")
    mismatch["messages"][0]["content"] = "<image><image>\nWrite Python code for both."
    schema2 = pa.schema([("messages", MESSAGES), ("images", pa.list_(pa.string()))])
    svg = _write(str(tmp_path / "svg2code_refine.parquet"), path_rows + [mismatch], schema2)
    # file 3: HF datasets image structs {"bytes", "path"}
    struct = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    hf_rows = [_sft_row(30, {"bytes": _png(30), "path": "x.png"}), _sft_row(31, {"bytes": None, "path": "imgs/2.png"})]
    web = _write(str(tmp_path / "web2code.parquet"), hf_rows, pa.schema([("messages", MESSAGES), ("images", struct)]))

    out = str(tmp_path / "out")
    stats = convert([chart, svg, web], out, "sft", rows_per_shard=4, max_skip_fraction=1.0, workers=1)
    assert stats == read_stats(out)
    assert stats["layouts"] == {"chart2code.parquet": "messages", "svg2code_refine.parquet": "messages",
                                "web2code.parquet": "messages"}  # fmt: skip
    assert stats["rows"] == 15 and stats["written"] == 9
    assert stats["skipped"] == {
        "image_count_mismatch": 1,
        "missing_fields": 1,
        "missing_image": 1,
        "no_code_block": 1,
        "undecodable_image": 1,
    }
    assert stats["duplicates"] == {"chart": 1}
    assert stats["domain"] == {"chart": 4, "svg": 3, "web": 2}
    assert stats["task"] == {"generate": 6, "refine": 3}
    assert set(stats["skip_examples"]) == set(stats["skipped"])
    assert stats["skip_examples"]["undecodable_image"][0].startswith("chart2code.parquet:4 ")

    records = {r.id: r for r in read_records(out)}
    expected = {f"chart2code-{i}": (good_bytes[i], [_png(i)]) for i in range(4)}
    expected |= {f"svg2code_refine-{i}": (path_rows[i], [_png(100 + i)]) for i in range(3)}
    expected |= {"web2code-0": (hf_rows[0], [_png(30)]), "web2code-1": (hf_rows[1], [_png(102)])}
    assert set(records) == set(expected)
    for rid, (row, images) in expected.items():
        assert records[rid].messages == row["messages"]
        assert records[rid].images == images
        assert records[rid].language == "python" and records[rid].split == "train"


def test_rl_parquet_converts_and_reads_back_identically(tmp_path):
    rows = [
        {"problem": f"<image>\nWrite the SVG code for picture {i}.", "answer": f"<svg id='{i}'/>", "images": [_png(i)]}
        for i in range(5)
    ]
    rows.append({"problem": "<image>\nWrite SVG.", "answer": "", "images": [_png(9)]})  # empty answer
    # two markers for one image
    rows.append({"problem": "<image><image>\nWrite SVG.", "answer": "<svg/>", "images": [_png(8)]})
    schema = pa.schema([("problem", pa.string()), ("answer", pa.string()), ("images", pa.list_(pa.binary()))])
    path = _write(str(tmp_path / "virl_svg.parquet"), rows, schema)
    out = str(tmp_path / "rl")
    assert data_cli(["convert", "--rl", path, "--out", out, "--max-skip-fraction", "0.5"]) == 0
    stats = read_stats(out)
    assert stats["kind"] == "rl" and stats["written"] == 5 and stats["layouts"] == {"virl_svg.parquet": "easyr1"}
    assert stats["skipped"] == {"empty_answer": 1, "image_count_mismatch": 1}
    assert stats["domain"] == {"svg": 5}
    records = sorted(read_records(out), key=lambda r: r.id)
    for i, record in enumerate(records):
        row = rows[i]
        assert (record.problem, record.answer, record.images) == (row["problem"], row["answer"], row["images"])
        assert record.language == "svg" and record.messages == []
        assert record.sft_messages()[1]["content"] == f"```svg\n<svg id='{i}'/>\n```"


def test_inspect_prints_samples_and_writes_a_contact_sheet(tmp_path, record_dir, capsys):
    from PIL import Image

    data_dir = record_dir(6)
    assert data_cli(["inspect", data_dir, "--count", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("domain=chart") == 4 and "contact sheet:" in printed
    with Image.open(os.path.join(data_dir, "contact_sheet_train.png")) as sheet:
        assert sheet.width >= 4 * 256 and sheet.height > 256
    assert data_cli(["inspect", str(tmp_path / "nope")]) == 2
