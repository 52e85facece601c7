"""Pluggable judge-model scores (the benchmarks' GPT-4-family ratings), which cannot be computed offline.

A Judge sees the sample, the predicted code and both pictures and returns named scores in [0, 1]. Without one the
summary lists the suite's judge metrics under `not_computed`. Metric names per suite follow the papers:
ChartMimic `high_level` (GPT-4o rating of the rendered chart vs the target), Plot2Code `judge_rating` (GPT-4V
overall rating), ChartX `judge_score` (GPT-4 redrawing score).
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

JUDGE_METRICS: dict[str, tuple[str, ...]] = {
    "chartmimic": ("high_level",),
    "plot2code": ("judge_rating",),
    "chartx": ("judge_score",),
}


class Judge(Protocol):
    """Anything with `metrics` (the names it fills) and `score(...)`, e.g. a client of a local judge server."""

    metrics: tuple[str, ...]

    def score(
        self, sample: Any, code: str | None, rendered: Image.Image | None, target: Image.Image | None
    ) -> dict[str, float | None]: ...
