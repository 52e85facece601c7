"""Conversion benchmark: a generated flat VinciCoder SFT parquet (real PNGs) through `python -m vinci_jax.data convert`.

Each size runs the real CLI in a subprocess; its rows/s and the peak RSS of its whole process tree (the converter
and its workers, sampled with psutil) are reported, at `--rows` and at the smaller `--compare-rows`, so memory that
grows with the row count shows as `rss_ratio` well above 1. The machine's load average is reported beside the
figures (other jobs slow a shared machine down). The JSON object is the last line of the output.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vinci_jax.bench convert", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000, help="rows of the main run")
    p.add_argument("--compare-rows", type=int, default=10_000, help="rows of the memory comparison run (0: skip)")
    p.add_argument("--workers", type=int, default=None, help="converter processes (default: CPU count)")
    p.add_argument("--rows-per-shard", type=int, default=5_000)
    p.add_argument("--row-group-size", type=int, default=1_000)
    p.add_argument("--image-size", type=int, default=256, help="side of the generated PNGs")
    p.add_argument("--distinct-images", type=int, default=1_000, help="distinct PNGs cycled over the rows")
    p.add_argument("--workdir", default=None, help="where the parquet and the output go (default: a temp dir)")
    return p


def _pngs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """Chart-like PNGs: random coloured blocks (compress like rendered charts do, decode like any PNG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        blocks = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(blocks).resize((size, size), Image.NEAREST).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def write_flat_parquet(path: str, rows: int, pngs: list[bytes], row_group_size: int) -> int:
    """A flat VinciCoder SFT file (user_content, assistant_content, image bytes) written in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("user_content", pa.string()), ("assistant_content", pa.string()), ("image", pa.binary())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group_size):
            ids = range(start, min(start + row_group_size, rows))
            writer.write_table(pa.table({
                "user_content": [f"Write Python matplotlib code that draws chart {i} in the image." for i in ids],
                "assistant_content": [f"```python\nimport matplotlib.pyplot as plt\nplt.bar([1, 2], [{i}, 3])\n```"
                                      for i in ids],
                "image": [pngs[i % len(pngs)] for i in ids],
            }, schema=schema))  # fmt: skip
    return os.path.getsize(path)


def _tree_rss(proc: Any) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_convert(parquet: str, out: str, workers: int, rows_per_shard: int) -> dict[str, Any]:
    """The data CLI on `parquet` in a subprocess: seconds, peak tree RSS and the CLI's summary."""
    import json

    import psutil

    command = [sys.executable, "-m", "vinci_jax.data", "convert", parquet, "--out", out, "--workers", str(workers),
               "--rows-per-shard", str(rows_per_shard)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_rss(watched))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"convert failed (rc={proc.returncode}): {stderr[-2000:]}")
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "summary": json.loads(stdout)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    root = args.workdir or tempfile.mkdtemp(prefix="bench_convert_")
    os.makedirs(root, exist_ok=True)
    pngs = _pngs(args.distinct_images, args.image_size)
    load_before = os.getloadavg()
    runs = {}
    try:
        for rows in [r for r in (args.compare_rows, args.rows) if r > 0]:
            parquet = os.path.join(root, f"chart2code_{rows}.parquet")
            size = write_flat_parquet(parquet, rows, pngs, args.row_group_size)
            out = os.path.join(root, f"out_{rows}")
            shutil.rmtree(out, ignore_errors=True)
            result = run_convert(parquet, out, workers, args.rows_per_shard)
            written = int(result["summary"]["written"])
            if written != rows:
                raise RuntimeError(f"{rows} rows in, {written} written: {result['summary']}")
            runs[rows] = {
                "rows": rows,
                "parquet_mb": round(size / 2**20, 1),
                "seconds": round(result["seconds"], 2),
                "rows_per_s": round(rows / result["seconds"], 1),
                "peak_rss_mb": round(result["peak_rss_mb"], 1),
            }
            print(runs[rows], file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    main_run = runs[args.rows]
    report: dict[str, Any] = {
        "bench": "convert",
        "layout": "vinci_sft",
        "workers": workers,
        "cpus": os.cpu_count(),
        "image_size": args.image_size,
        "rows_per_shard": args.rows_per_shard,
        **main_run,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.compare_rows > 0:
        small = runs[args.compare_rows]
        report["compare"] = small
        report["rss_ratio"] = round(main_run["peak_rss_mb"] / small["peak_rss_mb"], 3)
    return report


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
