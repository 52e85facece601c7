"""Paired bootstrap intervals: is a policy's held-out gain over another one larger than the noise of the prompts?

Both policies are scored on the same prompts, so the gain is measured per prompt (after - before) and the prompts are
resampled with replacement; the interval is the percentile interval of the resampled mean gains. With `strata`
(e.g. the domain of each prompt) the resampling happens within each stratum, so every resample keeps the held-out
set's domain mix and the overall mean is the mean over all prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def as_dict(self) -> dict[str, float]:
        return {"gain": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def paired_bootstrap(
    after: Sequence[float],
    before: Sequence[float],
    *,
    strata: Sequence[str] | None = None,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of after - before over paired samples and its percentile bootstrap interval. NaN pairs are dropped."""
    a, b = np.asarray(after, np.float64), np.asarray(before, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap needs two equally long 1-D sequences, got {a.shape} and {b.shape}")
    groups = np.asarray(strata if strata is not None else ["all"] * len(a))
    if groups.shape != a.shape:
        raise ValueError(f"strata has {groups.shape[0]} entries for {a.shape[0]} pairs")
    keep = np.isfinite(a) & np.isfinite(b)
    diff, groups = (a - b)[keep], groups[keep]
    if diff.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples, np.float64)
    for group in np.unique(groups):
        values = diff[groups == group]
        picks = rng.integers(0, values.size, size=(resamples, values.size))
        totals += values[picks].sum(axis=1)
    means = totals / diff.size
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(diff.mean()), float(low), float(high), int(diff.size))
