"""The stop rule for infrastructure failures, shared by every caller that renders in bulk (ViRL, data builds).

Results with status "infra" are the renderer's failures, not the code's. A run that keeps going while they pile up
measures the renderer instead of the model (or writes a corpus of whatever happened to render), so callers stop
when they appear in the first batch or exceed a fraction (default 5%) of a batch's renders.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from renderers.types import INFRA, RenderInfraError

DEFAULT_MAX_INFRA_FRACTION = 0.05


@dataclass(frozen=True)
class InfraBudget:
    """`check(...)` per batch; raises RenderInfraError naming the causes when the batch breaks the budget."""

    max_fraction: float = DEFAULT_MAX_INFRA_FRACTION

    def exceeded(self, infra: int, rendered: int, *, first: bool) -> bool:
        return infra > 0 and (first or infra > self.max_fraction * max(rendered, 1))

    def check(self, infra: int, rendered: int, *, first: bool, causes: str, what: str = "renders") -> None:
        if self.exceeded(infra, rendered, first=first):
            fraction = infra / max(rendered, 1)
            when = "in the first batch" if first else f"over the {self.max_fraction:.0%} limit"
            raise RenderInfraError(
                f"{infra} of {rendered} {what} failed in the renderer itself ({fraction:.0%}, {when}); stopping "
                f"rather than scoring the renderer. Causes: {causes}"
            )

    def check_results(self, results: Sequence[Any], languages: Sequence[str | None], *, first: bool) -> None:
        """The same rule applied directly to RenderResults (None entries were not rendered)."""
        rendered = sum(r is not None for r in results)
        failures = infra_failures(results, languages)
        self.check(len(failures), rendered, first=first, causes=describe_causes(failures))


def infra_failures(results: Sequence[Any], languages: Sequence[str | None]) -> list[tuple[str, Any]]:
    return [
        (lang or "unknown", r)
        for lang, r in zip(languages, results, strict=False)
        if getattr(r, "status", None) == INFRA
    ]


def count_by_language(failures: Sequence[tuple[str, Any]]) -> dict[str, int]:
    return dict(Counter(lang for lang, _ in failures))


def describe_causes(failures: Sequence[tuple[str, Any]], limit: int = 3) -> str:
    """'python: <error> (x3); svg: ...': the most common errors per language."""
    if not failures:
        return "(none reported here; see the other processes of this run)"
    by_lang: dict[str, Counter[str]] = {}
    for lang, result in failures:
        by_lang.setdefault(lang, Counter())[str(getattr(result, "error", ""))[:300]] += 1
    parts = []
    for lang, errors in sorted(by_lang.items()):
        parts += [f"{lang}: {error} (x{count})" for error, count in errors.most_common(limit)]
    return "; ".join(parts)
