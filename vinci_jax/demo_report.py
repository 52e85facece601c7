"""The demo's report: report.html with a per-domain bar chart, the ViRL training curve and a contact sheet (PNGs).

Inputs are plain data (the summary dict the demo also writes as summary.json, the ViRL metrics.jsonl and the
held-out renders), so the report can be rebuilt from a finished workdir.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

STAGE_LABELS = {
    "random_init": "before SFT",
    "after_sft": "after SFT",
    "after_virl": "after ViRL",
    "baseline": "SFT continued (baseline)",
}


def bar_chart(path: Path, summary: dict[str, Any]) -> Path:
    """Held-out normalised reward per domain and stage, with the 95% interval of each mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGE_LABELS if s in summary["held_out"]]
    domains = list(summary["held_out"][stages[0]]["domains"])
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    for k, stage in enumerate(stages):
        rows = summary["held_out"][stage]["domains"]
        means = [rows[d]["normalised_mean"]["gain"] for d in domains]
        low = [rows[d]["normalised_mean"]["gain"] - rows[d]["normalised_mean"]["low"] for d in domains]
        high = [rows[d]["normalised_mean"]["high"] - rows[d]["normalised_mean"]["gain"] for d in domains]
        xs = [i + (k - (len(stages) - 1) / 2) * width for i in range(len(domains))]
        ax.bar(xs, means, width, yerr=[low, high], capsize=3, label=STAGE_LABELS[stage])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels(domains)
    ax.set_ylabel("normalised reward (0 = trivial, 1 = gold)")
    ax.set_title("Held-out normalised reward per domain (95% bootstrap interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curve(path: Path, metrics_jsonl: Path, domains: Sequence[str]) -> Path:
    """ViRL per step: reward per domain, execution rate, response length, clip fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "reward" in r]
    steps = [r.get("step", i + 1) for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), dpi=100)
    for domain in domains:
        axes[0].plot(steps, [r.get(f"{domain}/reward", float("nan")) for r in rows], marker=".", label=domain)
    axes[0].plot(steps, [r["reward"] for r in rows], color="black", linewidth=2, label="all")
    axes[0].legend(fontsize=7)
    for ax, key in zip(axes[1:], ("execution", "response_len", "clip_fraction"), strict=True):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker=".")
        ax.set_title(key)
    axes[0].set_title("reward")
    for ax in axes:
        ax.set_xlabel("ViRL step")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _thumb(png: bytes | None, side: int) -> Image.Image:
    canvas = Image.new("RGB", (side, side), (235, 235, 235))
    if png:
        try:
            image = Image.open(io.BytesIO(png)).convert("RGB")
        except Exception:  # noqa: BLE001 - an undecodable render shows as the grey cell
            return canvas
        image.thumbnail((side, side))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def contact_sheet(path: Path, rows: Sequence[dict[str, Any]], side: int = 160) -> Path:
    """One row per held-out prompt: target | SFT render | ViRL render, with the domain and both rewards."""
    label_h = 16
    sheet = Image.new("RGB", (3 * side, max(1, len(rows)) * (side + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * (side + label_h)
        cells = [
            (row["target_png"], f"{row['domain']} target"),
            (row["sft_png"], f"SFT {row['sft_reward']:.2f}"),
            (row["virl_png"], f"ViRL {row['virl_reward']:.2f}"),
        ]
        for c, (png, text) in enumerate(cells):
            sheet.paste(_thumb(png, side), (c * side, y + label_h))
            draw.text((c * side + 4, y + 2), text, fill=(0, 0, 0))
    sheet.save(path)
    return path


def _table(summary: dict[str, Any]) -> str:
    head = "<tr><th>stage</th><th>domain</th><th>prompts</th><th>reward</th><th>trivial</th><th>gold</th>"
    head += "<th>normalised</th><th>execution</th><th>format</th></tr>"
    body = []
    for stage, label in STAGE_LABELS.items():
        if stage not in summary["held_out"]:
            continue
        for domain, row in summary["held_out"][stage]["table"].items():
            body.append(
                f"<tr><td>{html.escape(label)}</td><td>{html.escape(domain)}</td><td>{row['prompts']}</td>"
                f"<td>{row['reward']:.3f}</td><td>{row['trivial']:.3f}</td><td>{row['gold']:.3f}</td>"
                f"<td>{row['normalised']:+.3f}</td><td>{row['execution']:.0%}</td><td>{row['format']:.0%}</td></tr>"
            )
    return f"<table>{head}{''.join(body)}</table>"


def _gains(summary: dict[str, Any]) -> str:
    parts = []
    for name, gains in summary.get("gains", {}).items():
        rows = "".join(
            f"<tr><td>{html.escape(domain)}</td><td>{g['gain']:+.3f}</td><td>[{g['low']:+.3f}, {g['high']:+.3f}]</td>"
            f"<td>{g['n']}</td></tr>"
            for domain, g in gains.items()
        )
        parts.append(
            f"<h3>{html.escape(name)} (normalised reward, paired bootstrap 95% interval)</h3>"
            f"<table><tr><th>domain</th><th>gain</th><th>95% interval</th><th>prompts</th></tr>{rows}</table>"
        )
    return "".join(parts)


def write_report(report_dir: Path, summary: dict[str, Any], metrics_jsonl: Path, sheet_rows: list[dict]) -> Path:
    """report.html + bars.png + curve.png + contact_sheet.png in `report_dir`; returns the HTML path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    domains = list(summary["held_out"]["after_sft"]["domains"])
    images = {
        "bars.png": bar_chart(report_dir / "bars.png", summary),
        "curve.png": training_curve(report_dir / "curve.png", metrics_jsonl, domains),
        "contact_sheet.png": contact_sheet(report_dir / "contact_sheet.png", sheet_rows),
    }
    stages = "".join(
        f"<li>{html.escape(name)}: "
        + ("running when the report was written" if info["seconds"] is None else f"{info['seconds']:.0f} s")
        + f" (budget {info['budget_s']:.0f} s)</li>"
        for name, info in summary.get("stages", {}).items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vinci-jax demo report</title>
<style>body {{ font-family: sans-serif; margin: 24px; }} table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }} img {{ max-width: 100%; }}</style>
</head><body>
<h1>vinci-jax demo</h1>
<p>Reward encoder: {html.escape(str(summary.get("encoder", "")))}. Normalised reward = (r - trivial) / (gold - trivial)
on the same held-out targets: 0 is no better than a blank canvas, 1 is the gold code.</p>
<h2>Held-out figures</h2>{_table(summary)}
<h2>Gains</h2>{_gains(summary)}
<h2>Normalised reward per domain</h2><img src="bars.png" alt="bar chart">
<h2>ViRL training curve</h2><img src="curve.png" alt="training curve">
<h2>Held-out targets, SFT and ViRL renders</h2><img src="contact_sheet.png" alt="contact sheet">
<h2>Stages</h2><ul>{stages}</ul>
</body></html>
"""
    out = report_dir / "report.html"
    out.write_text(page)
    assert all(p.is_file() for p in images.values())
    return out
