"""Chart metrics as the official evaluators compute them, from the records of renderers.trace_matplotlib.

ChartMimic low-level scores (ChartMimic/ChartMimic, chart2code/utils/evaluator/):
- text_f1 (text_evaluator.py, TextEvaluator(use_axs=False)): F1 of the multisets of strings the PDF backend drew
  once the x/y ticks were removed; no text on either side scores 0;
- layout_f1 (layout_evaluator.py): F1 of the multisets of subplot-spec placements; no layout on either side 0; the
  graph category compares one fixed placement per axes (its `_get_suffix_special_for_graph`);
- type_f1 (chart_type_evaluator.py): F1 of the call counts of the traced callables;
- color_f1 (color_evaluator.py + color_utils.py): above 10 entries the similarity filter, then per callable the
  best one-to-one pairing of colours (the official tries every permutation; the assignment reaches the same maximum)
  summed over callables: precision = sum / predicted entries, recall = sum / gold entries;
- low_level: mean of the four.
Corrections of upstream bugs (see the README): ChartTypeEvaluator keeps the previous sample's scores when the
prediction calls nothing (here 0), ColorEvaluator divides by zero when the gold draws no colour outside the `box`
category (here 0).

Plot2Code text-match (TencentARC/Plot2Code, plot2code/eval/text_match_score.py, match_texts): each gold text is
paired with the first unused predicted text of the same (lower-cased) string whose position, scaled by the ratio of
figure sizes, lies within the similarity radius (exp(-distance / 100) > 0.8, positions in the texts' own
coordinates); score = matched / (gold + predicted - matched), 1 when neither figure has text. Predictions that do
not run, or render all white, are left out of the mean (None).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from vinci_jax.evaluate.colors import color_similarity as rgb_similarity
from vinci_jax.evaluate.matching import assign, f1

CHARTMIMIC_METRICS = ("text_f1", "layout_f1", "type_f1", "color_f1", "low_level")
PLOT2CODE_METRICS = ("text_match",)
COLOR_FILTER_THRESHOLD = 10
COLOR_FILTER_SIMILARITY = 0.7
POSITION_SIMILARITY = 0.8
GRAPH_PLACEMENT = (1, 1, 0, 1, 0, 1)


def _official_f1(gold: Sequence[Any], pred: Sequence[Any]) -> float:
    """Text / layout evaluators: multiset hits, either side empty scores 0."""
    if not gold or not pred:
        return 0.0
    hits = sum((Counter(gold) & Counter(pred)).values())
    return f1(hits / len(pred), hits / len(gold))


def type_f1(gold: dict[str, int], pred: dict[str, int]) -> float:
    if not pred or not gold:
        return 0.0
    hits = sum(min(count, gold.get(name, 0)) for name, count in pred.items())
    return f1(hits / sum(pred.values()), hits / sum(gold.values()))


def chart_color_similarity(c1: str, c2: str) -> float:
    """calculate_similarity_single: two '#' colours 1 - CIEDE2000/100 (first six hex digits), two colormap names 1
    if equal, a colour against a name 0."""
    if c1.startswith("#") and c2.startswith("#"):
        return rgb_similarity(c1[:7], c2[:7])
    if not c1.startswith("#") and not c2.startswith("#"):
        return 1.0 if c1 == c2 else 0.0
    return 0.0


def filter_colors(entries: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """filter_color, applied above COLOR_FILTER_THRESHOLD entries: keep an entry unless its colour is more than 0.7
    similar to one already kept (whatever the callable)."""
    entries = [(str(g), str(c)) for g, c in entries]
    if len(entries) <= COLOR_FILTER_THRESHOLD:
        return entries
    kept: list[tuple[str, str]] = []
    for group, colour in entries:
        if all(chart_color_similarity(colour, k) <= COLOR_FILTER_SIMILARITY for _, k in kept):
            kept.append((group, colour))
    return kept


def color_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    g, p = filter_colors(gold), filter_colors(pred)
    if not g or not p:
        return 0.0
    total = 0.0
    for group in {k for k, _ in g} & {k for k, _ in p}:
        g_items = [c for k, c in g if k == group]
        p_items = [c for k, c in p if k == group]
        total += sum(s for _, _, s in assign(p_items, g_items, chart_color_similarity))
    return f1(total / len(p), total / len(g))


def _layout(record: dict[str, Any], graph: bool) -> list[tuple[Any, ...]]:
    if graph:
        return [GRAPH_PLACEMENT] * int(record.get("num_axes", 0))
    return [tuple(x) for x in record.get("layout", [])]


def chartmimic_scores(gold: dict[str, Any], pred: dict[str, Any], *, graph: bool = False) -> dict[str, float]:
    """The four ChartMimic low-level F1 scores and their mean, from two `chartmimic` trace records."""
    scores = {
        "text_f1": _official_f1(list(gold.get("texts", [])), list(pred.get("texts", []))),
        "layout_f1": _official_f1(_layout(gold, graph), _layout(pred, graph)),
        "type_f1": type_f1(dict(gold.get("types", {})), dict(pred.get("types", {}))),
        "color_f1": color_f1(gold.get("colors", []), pred.get("colors", [])),
    }
    scores["low_level"] = sum(scores.values()) / 4
    return scores


def _position_similarity(p1: Sequence[Any], p2: Sequence[Any], ratio: Sequence[float]) -> float | None:
    if None in (*p1, *p2):
        return None  # a position that is not a number: the official comparison raises and skips the pair
    dx, dy = p1[0] - p2[0] * ratio[0], p1[1] - p2[1] * ratio[1]
    return math.exp(-math.hypot(dx, dy) / 100)


def text_match(gold: dict[str, Any], pred: dict[str, Any]) -> float:
    """Plot2Code text-match of two `plot2code` trace records."""
    gold_texts = [(t, (x, y)) for t, x, y in gold.get("texts", [])]
    unused = [(t, (x, y)) for t, x, y in pred.get("texts", [])]
    n_gold, n_pred = len(gold_texts), len(unused)
    if n_gold + n_pred == 0:
        return 1.0
    gw, gh = gold.get("size_inches", (1.0, 1.0))
    pw, ph = pred.get("size_inches", (1.0, 1.0))
    ratio = (gw / pw if pw else math.inf, gh / ph if ph else math.inf)
    matched = 0
    for text, position in gold_texts:
        for i, (candidate, where) in enumerate(unused):
            similarity = _position_similarity(position, where, ratio)
            if candidate == text and similarity is not None and similarity > POSITION_SIMILARITY:
                matched += 1
                del unused[i]
                break
    return matched / (n_gold + n_pred - matched)
