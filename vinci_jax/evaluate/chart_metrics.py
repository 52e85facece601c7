"""Chart metrics from matplotlib traces (renderers.trace_matplotlib) of the gold and the generated code.

ChartMimic low-level scores (Shi et al. 2024, "ChartMimic", Sec. 3.3; computed there by instrumenting matplotlib):
- text_f1: F1 of the multisets of strings drawn (titles, labels, tick labels, legends, annotations);
- layout_f1: F1 of the multisets of axes placements [nrows, ncols, row span, col span] of the subplot grid specs;
- type_f1: F1 of the multisets of plotting calls made (plot, bar, scatter, pie, ...; outermost calls only);
- color_f1: soft F1 of element colours, matching colours only within an element kind (line, marker, patch,
  collection) by optimal assignment with similarity max(0, 1 - CIEDE2000 / 100);
- low_level: mean of the four.
Plot2Code text-match (Wu et al. 2024, "Plot2Code"): the fraction of gold texts that the generated figure draws with
the same string at about the same place (centre within TEXT_POSITION_TOLERANCE of the figure size on both axes),
one-to-one.
"""

from __future__ import annotations

from typing import Any

from vinci_jax.evaluate.colors import color_similarity
from vinci_jax.evaluate.matching import grouped_soft_f1, multiset_f1

TEXT_POSITION_TOLERANCE = 0.05
CHARTMIMIC_METRICS = ("text_f1", "layout_f1", "type_f1", "color_f1", "low_level")
PLOT2CODE_METRICS = ("text_match",)


def _texts(trace: dict[str, Any]) -> list[str]:
    return [t["text"] for t in trace.get("texts", [])]


def chartmimic_scores(gold: dict[str, Any], pred: dict[str, Any]) -> dict[str, float]:
    """The four ChartMimic low-level F1 scores and their mean, from two matplotlib traces."""
    scores = {
        "text_f1": multiset_f1(_texts(gold), _texts(pred)),
        "layout_f1": multiset_f1(
            [tuple(x) for x in gold.get("layout", [])], [tuple(x) for x in pred.get("layout", [])]
        ),
        "type_f1": multiset_f1(gold.get("types", []), pred.get("types", [])),
        "color_f1": grouped_soft_f1(
            [tuple(c) for c in gold.get("colors", [])], [tuple(c) for c in pred.get("colors", [])], color_similarity
        ),
    }
    scores["low_level"] = sum(scores.values()) / 4
    return scores


def text_match(gold: dict[str, Any], pred: dict[str, Any], tolerance: float = TEXT_POSITION_TOLERANCE) -> float:
    """Plot2Code text-match: share of gold texts drawn again with the same string near the same place."""
    gold_texts = gold.get("texts", [])
    if not gold_texts:
        return 1.0
    unused = list(pred.get("texts", []))
    hits = 0
    for g in gold_texts:
        for i, p in enumerate(unused):
            if p["text"] == g["text"] and abs(p["x"] - g["x"]) <= tolerance and abs(p["y"] - g["y"]) <= tolerance:
                hits += 1
                del unused[i]
                break
    return hits / len(gold_texts)
