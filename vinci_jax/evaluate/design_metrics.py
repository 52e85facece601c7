"""Design2Code visual-score components (NoviScl/Design2Code, Design2Code/metrics/visual_score.py,
visual_eval_v3_multi) from the text blocks of the rendered pages (renderers.trace_run html trace).

Blocks (ocr_free_utils.get_blocks_ocr_free, done on the live page by renderers.trace_html): every text-tag element
gets its own colour, two recoloured screenshots are diffed and each text node is boxed by the changed pixels of its
colour, coloured by the page's own pixels there; text stripped and lower-cased. Then, as upstream: blocks that
share a box are merged (merge_blocks_by_bbox), neighbouring blocks are merged while that improves the matching
(find_possible_merge, merge threshold 0.05), the final matching is the assignment on difflib similarity with the
context bonus (adjust_cost_for_context, bonus 0.1, window 1), pairs below 0.5 dropped:
- block_match: matched block area (both sides) / (matched + unmatched block area);
- text: mean difflib ratio of matched pairs;
- position: mean of 1 - max(|dx|, |dy|) of matched block centres (page fractions);
- color: mean of max(0, 1 - CIEDE2000 / 100) of matched blocks' colours (mean page pixels of the text).
No block on either side, or no match: all four 0 (as upstream). CLIP (the fifth component) only with local CLIP
weights (vinci_jax.evaluate.clip).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from vinci_jax.evaluate.colors import color_similarity, parse_color

MATCH_THRESHOLD = 0.5
MERGE_GAIN = 0.05
CONSECUTIVE_BONUS = 0.1
WINDOW_SIZE = 1
DESIGN2CODE_METRICS = ("block_match", "text", "position", "color")

Block = dict[str, Any]  # {"text": str, "bbox": (x, y, w, h) page fractions, "color": (r, g, b)}


def blocks_from_trace(trace: dict[str, Any]) -> list[Block]:
    """Trace blocks -> the official block dicts (text lower-cased as get_blocks_from_image_diff_pixels does)."""
    out = []
    for b in trace.get("blocks", []):
        text = str(b.get("text", "")).strip()
        if not text:
            continue
        rgb = parse_color(b.get("color") or "") or (0, 0, 0)
        out.append({"text": text.lower(), "bbox": (float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"])),
                    "color": tuple(int(c) for c in rgb)})  # fmt: skip
    return out


class _Similarity:
    """difflib ratio of two texts, cached: the merge search re-scores the same pairs many times."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], float] = {}

    def __call__(self, a: str, b: str) -> float:
        key = (a, b)
        if key not in self.cache:
            self.cache[key] = difflib.SequenceMatcher(None, a, b).ratio()
        return self.cache[key]


def merge_pair(a: Block, b: Block) -> Block:
    """merge_blocks_wo_check: joined text, union box, integer mean colour."""
    x0, y0 = min(a["bbox"][0], b["bbox"][0]), min(a["bbox"][1], b["bbox"][1])
    x1 = max(a["bbox"][0] + a["bbox"][2], b["bbox"][0] + b["bbox"][2])
    y1 = max(a["bbox"][1] + a["bbox"][3], b["bbox"][1] + b["bbox"][3])
    color = tuple((c1 + c2) // 2 for c1, c2 in zip(a["color"], b["color"], strict=True))
    return {"text": a["text"] + " " + b["text"], "bbox": (x0, y0, x1 - x0, y1 - y0), "color": color}


def merge_by_bbox(blocks: Sequence[Block]) -> list[Block]:
    """merge_blocks_by_bbox: blocks with the same box become one (texts joined, colours averaged)."""
    merged: dict[tuple[float, ...], Block] = {}
    for block in blocks:
        box = tuple(block["bbox"])
        if box in merged:
            kept = merged[box]
            kept["text"] += " " + block["text"]
            kept["color"] = tuple((c1 + c2) / 2 for c1, c2 in zip(kept["color"], block["color"], strict=True))
        else:
            merged[box] = dict(block)
    return list(merged.values())


def _context_adjusted(cost: np.ndarray, bonus: float, window: int) -> np.ndarray:
    """adjust_cost_for_context: a confident pair (cost < -0.5) gains bonus x the sum of the 2*window lowest costs
    around it (itself excluded once)."""
    if window <= 0 or bonus == 0.0:
        return cost
    n, m = cost.shape
    adjusted = cost.copy()
    for i in range(n):
        for j in range(m):
            if adjusted[i, j] >= -0.5:
                continue
            near = cost[max(0, i - window) : i + window + 1, max(0, j - window) : j + window + 1].flatten()
            ordered = np.sort(near)[::-1]
            ordered = np.delete(ordered, np.where(ordered == cost[i, j])[0][0])
            adjusted[i, j] += bonus * np.sum(ordered[-window * 2 :])
    return adjusted


def _matching(a: Sequence[Block], b: Sequence[Block], sim: _Similarity, bonus: float, window: int):
    from scipy.optimize import linear_sum_assignment

    cost = -np.asarray([[sim(x["text"], y["text"]) for y in b] for x in a], np.float64).reshape(len(a), len(b))
    cost = _context_adjusted(cost, bonus, window)
    rows, cols = linear_sum_assignment(cost)
    return list(zip(rows.tolist(), cols.tolist(), strict=True)), cost[rows, cols].tolist()


def _difference_of_means(before: Sequence[float], after: Sequence[float]) -> float:
    """difference_of_means: compare the costs that differ between two matchings (common values cancel)."""
    c1, c2 = Counter(before), Counter(after)
    for value in set(before) & set(after):
        common = min(c1[value], c2[value])
        c1[value] -= common
        c2[value] -= common
    u1, u2 = list(c1.elements()), list(c2.elements())
    m1 = sum(u1) / len(u1) if u1 else 0
    m2 = sum(u2) / len(u2) if u2 else 0
    if m1 - m2 > 0:
        return m1 - m2 if min(u1) > min(u2) else 0.0
    return m1 - m2


def _merge_by_list(blocks: list[Block], merges: list[list[Any]]) -> list[Block]:
    """merge_blocks_by_list: apply the best merges first, skipping any that touch a block already merged."""
    popped = []
    while merges:
        i, j = merges[0][0], merges[0][1]
        blocks[i] = merge_pair(blocks[i], blocks[j])
        popped.append(j)
        merges = [m for m in merges[1:] if m[0] not in (i, j) and m[1] not in (i, j)]
    for index in sorted(popped, reverse=True):
        if index < len(blocks):
            blocks.pop(index)
    return blocks


def _merge_side(side: list[Block], other: list[Block], costs: list[float], sim: _Similarity, first: bool):
    merges = []
    for i in range(len(side) - 1):
        trial = [*side[:i], merge_pair(side[i], side[i + 1]), *side[i + 2 :]]
        a, b = (trial, other) if first else (other, trial)
        _, updated = _matching(a, b, sim, 0.0, 1)
        gain = _difference_of_means(costs, updated)
        if gain > MERGE_GAIN:
            merges.append([i, i + 1, gain])
    merges.sort(key=lambda m: m[2], reverse=True)
    return (_merge_by_list(side, merges), True) if merges else (side, False)


def find_possible_merge(a: list[Block], b: list[Block], sim: _Similarity):
    """find_possible_merge: merge neighbours on either side while a merge lowers the matched costs."""
    while True:
        _, costs = _matching(a, b, sim, 0.0, 1)
        a_changed = b_changed = False
        if len(a) >= 2:
            a, a_changed = _merge_side(a, b, costs, sim, first=True)
            if a_changed:
                _, costs = _matching(a, b, sim, 0.0, 1)
        if len(b) >= 2:
            b, b_changed = _merge_side(b, a, costs, sim, first=False)
        if not a_changed and not b_changed:
            break
    pairs, _ = _matching(a, b, sim, CONSECUTIVE_BONUS, WINDOW_SIZE)
    return a, b, pairs


def _area(block: Block) -> float:
    return block["bbox"][2] * block["bbox"][3]


def _centre(block: Block) -> tuple[float, float]:
    x, y, w, h = block["bbox"]
    return x + w / 2, y + h / 2


def design2code_scores(gold: dict[str, Any], pred: dict[str, Any]) -> dict[str, float]:
    """Block-match, text, position and colour of a predicted page against the gold page (html trace records)."""
    original = merge_by_bbox(blocks_from_trace(gold))
    predicted = blocks_from_trace(pred)
    if not original or not predicted:
        return dict.fromkeys(DESIGN2CODE_METRICS, 0.0)
    sim = _Similarity()
    predicted, original, pairs = find_possible_merge(merge_by_bbox(predicted), original, sim)
    matches = [(i, j, s) for i, j in pairs if (s := sim(predicted[i]["text"], original[j]["text"])) >= MATCH_THRESHOLD]
    if not matches:
        return dict.fromkeys(DESIGN2CODE_METRICS, 0.0)
    matched_p, matched_o = {i for i, _, _ in matches}, {j for _, j, _ in matches}
    unmatched = sum(_area(b) for i, b in enumerate(predicted) if i not in matched_p)
    unmatched += sum(_area(b) for j, b in enumerate(original) if j not in matched_o)
    matched_areas = [_area(predicted[i]) + _area(original[j]) for i, j, _ in matches]
    positions = []
    for i, j, _ in matches:
        (px, py), (ox, oy) = _centre(predicted[i]), _centre(original[j])
        positions.append(1 - max(abs(ox - px), abs(oy - py)))
    total = unmatched + sum(matched_areas)
    return {
        "block_match": sum(matched_areas) / total if total > 0 else 0.0,
        "text": float(np.mean([s for _, _, s in matches])),
        "position": float(np.mean(positions)),
        "color": float(np.mean([color_similarity(predicted[i]["color"], original[j]["color"]) for i, j, _ in matches])),
    }
