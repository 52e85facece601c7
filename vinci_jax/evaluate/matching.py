"""Set-matching pieces shared by the metrics: F1 of a precision and a recall, one-to-one optimal assignment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def assign(gold: Sequence[T], pred: Sequence[T], similarity: Callable[[T, T], float]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (gold index, pred index, similarity) maximising the total similarity (Hungarian)."""
    if not gold or not pred:
        return []
    from scipy.optimize import linear_sum_assignment

    sims = np.asarray([[similarity(g, p) for p in pred] for g in gold], np.float64)
    rows, cols = linear_sum_assignment(sims, maximize=True)
    return [(int(r), int(c), float(sims[r, c])) for r, c in zip(rows, cols, strict=True)]
