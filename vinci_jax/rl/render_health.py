"""Renderer health during RL: infrastructure failures are the renderer's, never the model's.

A render that comes back with status "infra" (sandbox setup failed, Chromium or TeX did not start, no worker could
be started, ...) says nothing about the code. Scored as a failed render it would push the policy away from correct
code, and when every render fails that way training optimises noise (the format term alone). So (the rule itself
is renderers.health.InfraBudget, shared with the data builds):
- a step stops the run (RenderInfraError naming the causes) when infra results appear in the run's first step, or
  exceed `max_infra_fraction` of the step's renders;
- below that, infra rows get their group's mean reward (zero advantage: they neither push nor pull the policy);
- metrics count them, overall and per language.
Decisions use the reward statuses, which every process of a multi-host run holds for every row, so all processes
stop together; the per-language counts and the causes come from this process's own render results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from renderers.health import InfraBudget, count_by_language, describe_causes, infra_failures

INFRA_STATUS = "render_infra"  # what the reward's decode_render makes of a RenderResult with status "infra"
NOT_RENDERED = ("", "no_code", "not_rendered")


@dataclass(frozen=True)
class RenderHealth:
    """`check` after each rollout step (default budget: 5% of a step's renders)."""

    budget: InfraBudget = field(default_factory=InfraBudget)

    def check(
        self,
        statuses: Sequence[str],
        results: Sequence[Any],
        languages: Sequence[str | None],
        *,
        first_step: bool,
    ) -> dict[str, float]:
        """Metrics for this step; raises RenderInfraError when the run must stop."""
        rendered = sum(s not in NOT_RENDERED for s in statuses)
        infra = sum(s == INFRA_STATUS for s in statuses)
        failures = infra_failures(results, languages)
        metrics: dict[str, float] = {"render/infra": float(infra), "render/infra_fraction": infra / max(rendered, 1)}
        metrics |= {f"render/infra/{lang}": float(n) for lang, n in count_by_language(failures).items()}
        self.budget.check(infra, rendered, first=first_step, causes=describe_causes(failures), what="rollout renders")
        return metrics


def neutralise_infra(rewards: np.ndarray, prompt_of_row: np.ndarray, statuses: Sequence[str]) -> np.ndarray:
    """Rewards with every infra row set to the mean of its group's other rows (left as is when the whole group is
    infra: equal rewards, zero advantage either way)."""
    rewards = np.asarray(rewards, np.float32).copy()
    infra = np.asarray([s == INFRA_STATUS for s in statuses], bool)
    if not infra.any():
        return rewards
    for prompt in np.unique(prompt_of_row[infra]):
        group = prompt_of_row == prompt
        healthy = group & ~infra
        if healthy.any():
            rewards[group & infra] = rewards[healthy].mean()
    return rewards
