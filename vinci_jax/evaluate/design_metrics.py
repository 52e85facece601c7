"""Design2Code visual-score components from the text blocks of the rendered pages (renderers.trace_run html trace).

Following Si et al. 2024 ("Design2Code", Sec. 4.2): text blocks of the gold and generated pages are paired by
optimal assignment on text similarity (difflib ratio), pairs below MATCH_THRESHOLD are dropped, then
- block_match: matched block area (both sides) / all block area (both sides): penalises missing and extra text;
- text: mean text similarity of matched pairs;
- position: mean of 1 - max(|dx|, |dy|) of matched block centres (page fractions);
- color: mean of max(0, 1 - CIEDE2000 / 100) of matched blocks' text colours.
Pages without text blocks on both sides score 1; with no match 0. Blocks come from the page's DOM text nodes with
their layout boxes in Chromium (not OCR), so they are exact for both sides. The CLIP component is computed only
when local CLIP weights are given (vinci_jax.evaluate.clip).
"""

from __future__ import annotations

import difflib
from typing import Any

from vinci_jax.evaluate.colors import color_similarity
from vinci_jax.evaluate.matching import assign

MATCH_THRESHOLD = 0.5
DESIGN2CODE_METRICS = ("block_match", "text", "position", "color")


def _blocks(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in trace.get("blocks", []) if b.get("text")]


def _text_sim(a: dict[str, Any], b: dict[str, Any]) -> float:
    return difflib.SequenceMatcher(None, a["text"], b["text"]).ratio()


def _area(block: dict[str, Any]) -> float:
    return max(0.0, float(block["w"])) * max(0.0, float(block["h"]))


def design2code_scores(gold: dict[str, Any], pred: dict[str, Any]) -> dict[str, float]:
    g, p = _blocks(gold), _blocks(pred)
    if not g and not p:
        return dict.fromkeys(DESIGN2CODE_METRICS, 1.0)
    pairs = [(i, j, s) for i, j, s in assign(g, p, _text_sim) if s >= MATCH_THRESHOLD]
    if not pairs:
        return dict.fromkeys(DESIGN2CODE_METRICS, 0.0)
    total_area = sum(map(_area, g)) + sum(map(_area, p))
    matched_area = sum(_area(g[i]) + _area(p[j]) for i, j, _ in pairs)
    position = []
    for i, j, _ in pairs:
        gx, gy = g[i]["x"] + g[i]["w"] / 2, g[i]["y"] + g[i]["h"] / 2
        px, py = p[j]["x"] + p[j]["w"] / 2, p[j]["y"] + p[j]["h"] / 2
        position.append(1.0 - max(abs(gx - px), abs(gy - py)))
    return {
        "block_match": matched_area / total_area if total_area > 0 else 1.0,
        "text": sum(s for _, _, s in pairs) / len(pairs),
        "position": sum(position) / len(position),
        "color": sum(color_similarity(g[i]["color"], p[j]["color"]) for i, j, _ in pairs) / len(pairs),
    }
