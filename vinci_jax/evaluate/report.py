"""Writes an evaluation to disk: results.jsonl, summary.json, summary.md (table) and gallery.html (+ images/)."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from vinci_jax.paths import is_remote, local_dir_for

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(summary: Mapping[str, Any]) -> str:
    """One row per domain plus 'all', one column per metric."""
    metrics = list(summary["metrics"])
    lines = [
        f"# {summary['suite']}: {summary['num_samples']} samples, execution rate {_fmt(summary['execution_rate'])}",
        "",
        "| domain | n | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
        f"| all | {summary['num_samples']} | " + " | ".join(_fmt(summary["metrics"][m]) for m in metrics) + " |",
    ]
    for domain, values in summary["by_domain"].items():
        lines.append(f"| {domain} | {values['num_samples']} | " + " | ".join(_fmt(values.get(m)) for m in metrics)
                     + " |")  # fmt: skip
    if summary.get("not_computed"):
        lines += ["", "Not computed:", ""]
        lines += [f"- `{name}`: {why}" for name, why in summary["not_computed"].items()]
    lines += ["", f"Visual similarity encoder: {summary.get('visual_encoder')}"]
    return "\n".join(lines) + "\n"


def _gallery(rows: Sequence[Mapping[str, Any]], files: Mapping[str, tuple[str | None, str | None]], title: str) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
        "body{font-family:sans-serif;margin:1em}h3{margin:.6em 0 .2em}"
        ".row{display:flex;gap:1em;border-bottom:1px solid #ccc;padding:0 0 .5em 0}"
        ".row img{max-width:360px;max-height:300px;border:1px solid #ddd}.fail{color:#b00}"
        "pre{max-width:900px;overflow:auto;background:#f6f6f6;padding:.5em}td{padding:0 .5em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for row in rows:
        target, pred = files.get(row["id"], (None, None))
        scores = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in row["metrics"].items())
        status = html.escape(row["status"]) + (f": {html.escape(row['error'])}" if row.get("error") else "")
        parts.append(
            f"<h3>{html.escape(row['id'])} ({html.escape(row['domain'])})</h3><div class='row'><div>"
            + (f"<img src='{target}' alt='target'>" if target else "<i>no target</i>")
            + "<br>target</div><div>"
            + (f"<img src='{pred}' alt='prediction'>" if pred else f"<p class='fail'>{status}</p>")
            + f"<br>prediction</div><div><table>{scores}</table>"
            + ("" if row["executed"] else f"<p class='fail'>{status}</p>")
            + "<details><summary>code</summary><pre>"
            + html.escape(row.get("code") or "(no code)")
            + "</pre></details></div></div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    out_dir: str,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    images: Mapping[str, tuple[Image.Image | None, Image.Image | None]],
) -> dict[str, str]:
    """Write every report file into out_dir (a local dir, or gs://... written locally, then uploaded); returns their
    paths by kind, under out_dir."""
    if is_remote(out_dir):
        with local_dir_for(out_dir) as staging:
            written = _write_report_into(staging, rows, summary, images)
        return {kind: out_dir.rstrip("/") + path[len(staging) :] for kind, path in written.items()}
    return _write_report_into(out_dir, rows, summary, images)


def _write_report_into(
    out_dir: str,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    images: Mapping[str, tuple[Image.Image | None, Image.Image | None]],
) -> dict[str, str]:
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    files: dict[str, tuple[str | None, str | None]] = {}
    for i, row in enumerate(rows):
        stem = f"{i:05d}-{_SAFE.sub('_', row['id'])[:60]}"
        target, pred = images.get(row["id"], (None, None))
        names = []
        for image, kind in ((target, "target"), (pred, "pred")):
            if image is None:
                names.append(None)
                continue
            name = f"images/{stem}-{kind}.png"
            image.save(os.path.join(out_dir, name))
            names.append(name)
        files[row["id"]] = (names[0], names[1])
    paths = {
        "results": os.path.join(out_dir, "results.jsonl"),
        "summary": os.path.join(out_dir, "summary.json"),
        "table": os.path.join(out_dir, "summary.md"),
        "gallery": os.path.join(out_dir, "gallery.html"),
    }
    with open(paths["results"], "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    with open(paths["summary"], "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(paths["table"], "w") as f:
        f.write(markdown_table(summary))
    with open(paths["gallery"], "w") as f:
        f.write(_gallery(rows, files, f"{summary['suite']} evaluation"))
    return paths


def log_to_tensorboard(writer: Any, summary: Mapping[str, Any], step: int, images: Mapping[str, Any] | None = None,
                       prefix: str = "eval", max_images: int = 4) -> None:  # fmt: skip
    """Scalars of a summary (and a few target|prediction panels) to a tensorboardX SummaryWriter."""
    import numpy as np

    writer.add_scalar(f"{prefix}/execution_rate", summary["execution_rate"] or 0.0, step)
    for name, value in summary["metrics"].items():
        if value is not None:
            writer.add_scalar(f"{prefix}/{name}", value, step)
    for domain, values in summary["by_domain"].items():
        for name, value in values.items():
            if name != "num_samples" and value is not None:
                writer.add_scalar(f"{prefix}/{domain}/{name}", value, step)
    for i, (sample_id, (target, pred)) in enumerate((images or {}).items()):
        if i >= max_images or target is None:
            break
        height = 256
        left = target.resize((max(1, target.width * height // target.height), height))
        right = (pred or Image.new("RGB", (height, height), (255, 255, 255))).resize(left.size)
        panel = Image.new("RGB", (left.width * 2, height), (255, 255, 255))
        panel.paste(left, (0, 0))
        panel.paste(right, (left.width, 0))
        writer.add_image(f"{prefix}/gallery/{sample_id}", np.asarray(panel), step, dataformats="HWC")
