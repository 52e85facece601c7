"""Runs gold and predicted code in the renderers sandbox: traced python/html jobs, plain svg/latex renders.

Nothing here executes code in this process (house rule): every job goes to sandboxed renderer workers. Python and
html jobs that need a trace (what matplotlib drew, the molecules RDKit drew, the page's text blocks) run with
`options["trace"]` in a `renderers.RenderPool` when the renderers support it, else in `renderers.trace_run.TracePool`
workers (the same sandbox plus instrumentation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from renderers import RenderJob, RenderPool, RenderResult

TRACE_KINDS_BY_DOMAIN = {"chart": ("matplotlib",), "chem": ("rdkit",), "web": ("html",), "other": ()}
TRACED_LANGUAGES = ("python", "html")
# The render workers run jobs under instrumentation themselves when RenderResult carries a trace (the
# options["trace"] hook); otherwise traced jobs go to renderers.trace_run's own sandboxed workers.
RENDER_POOL_TRACES = any(f.name == "trace" for f in dataclasses.fields(RenderResult))


class Executor:
    """Owns the pools (started on first use) and renders (code, language, domain) jobs in parallel."""

    def __init__(self, num_workers: int = 1, timeout_s: float = 20.0) -> None:
        self.num_workers = max(1, int(num_workers))
        self.timeout_s = float(timeout_s)
        self._trace_pool = None
        self._render_pools: dict[str, RenderPool] = {}

    def _traced(self):
        if self._trace_pool is None:
            from renderers.trace_run import TracePool

            self._trace_pool = TracePool(self.num_workers, timeout_s=self.timeout_s)
        return self._trace_pool

    def _plain(self, language: str) -> RenderPool:
        """One pool per language, so an SVG-only evaluation never pays for TeX format builds."""
        if language not in self._render_pools:
            self._render_pools[language] = RenderPool(self.num_workers, languages=(language,), timeout_s=self.timeout_s)
        return self._render_pools[language]

    def submit(self, code: str, language: str, domain: str, options: Mapping[str, Any] | None = None) -> Future[Any]:
        options = dict(options or {})
        if language in TRACED_LANGUAGES:
            kinds = TRACE_KINDS_BY_DOMAIN.get(domain, ())
            if not RENDER_POOL_TRACES:
                return self._traced().submit(code, language, kinds, options)
            if kinds:
                options["trace"] = list(kinds)
        return self._plain(language).submit(RenderJob(code=code, language=language, options=options))

    def run(self, jobs: Sequence[tuple[Any, ...] | None]) -> list[RenderResult | None]:
        """Results in order for (code, language, domain[, options]) jobs; a None job (nothing to run) gives None."""
        futures = [None if job is None else self.submit(*job) for job in jobs]
        return [None if f is None else f.result() for f in futures]

    def close(self) -> None:
        for pool in (self._trace_pool, *self._render_pools.values()):
            if pool is not None:
                pool.close()
        self._trace_pool, self._render_pools = None, {}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
