"""Set-matching scores shared by the metrics: multiset F1 and soft (similarity-weighted) F1 by optimal assignment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def multiset_f1(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """F1 of two multisets (exact matches). Both empty: 1; one empty: 0."""
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    hits = sum((Counter(gold) & Counter(pred)).values())
    return f1(hits / len(pred), hits / len(gold))


def assign(gold: Sequence[T], pred: Sequence[T], similarity: Callable[[T, T], float]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (gold index, pred index, similarity) maximising the total similarity (Hungarian)."""
    if not gold or not pred:
        return []
    from scipy.optimize import linear_sum_assignment

    sims = np.asarray([[similarity(g, p) for p in pred] for g in gold], np.float64)
    rows, cols = linear_sum_assignment(sims, maximize=True)
    return [(int(r), int(c), float(sims[r, c])) for r, c in zip(rows, cols, strict=True)]


def soft_f1(gold: Sequence[Any], pred: Sequence[Any], similarity: Callable[[Any, Any], float]) -> float:
    """F1 where a matched pair counts its similarity in [0, 1] instead of 1 (ChartMimic-style colour score)."""
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    total = sum(s for _, _, s in assign(gold, pred, similarity))
    return f1(total / len(pred), total / len(gold))


def grouped_soft_f1(
    gold: Sequence[tuple[str, Any]], pred: Sequence[tuple[str, Any]], similarity: Callable[[Any, Any], float]
) -> float:
    """soft_f1 where only items of the same group (e.g. element kind) may match."""
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    total = 0.0
    for group in {g for g, _ in gold} & {g for g, _ in pred}:
        g_items = [v for k, v in gold if k == group]
        p_items = [v for k, v in pred if k == group]
        total += sum(s for _, _, s in assign(g_items, p_items, similarity))
    return f1(total / len(pred), total / len(gold))
