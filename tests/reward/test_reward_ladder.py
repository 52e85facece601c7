"""The offline reward ranks like a person, and gold code earns full reward, in all five synthetic domains.

The ladder (vinci_jax/reward/ladder.py) is built here from the generators: targets rendered as the data build
renders them, every rung rendered and scored through the ViRL reward path; gold is also scored through the
evaluator (its own renders with the records' render options).
"""

from __future__ import annotations

import numpy as np
import pytest

from vinci_jax.reward.config import ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.ladder import RUNGS, run_ladder, spearman
from vinci_jax.reward.visual import VisualReward

DOMAINS = ("chart", "svg", "web", "tikz", "chem")
TARGETS = 2


@pytest.fixture(scope="module")
def ladders():
    from renderers import RenderPool

    reward = VisualReward(RewardConfig(encoder=ENCODER_OFFLINE))
    pool = RenderPool(num_workers=2, languages=["html", "latex", "python", "svg"])
    try:
        yield run_ladder(DOMAINS, TARGETS, reward, pool)
    finally:
        pool.close()


@pytest.mark.parametrize("domain", DOMAINS)
def test_offline_reward_falls_with_severity(ladders, domain):
    ladder = ladders[domain]
    assert all(s == "ok" for row in ladder.statuses for s in row), ladder.statuses
    means = dict(zip(RUNGS, ladder.means, strict=True))
    assert ladder.spearman >= 0.9, means
    assert means["gold"] > means["small_change"] and means["small_change"] > means["unrelated"], means
    assert means["unrelated"] > means["trivial"], means
    assert means["trivial"] <= 0.4, means


def test_trivial_output_scores_at_most_0_4_on_average(ladders):
    assert np.mean([ladder.means[-1] for ladder in ladders.values()]) <= 0.4


@pytest.mark.parametrize("domain", DOMAINS)
def test_gold_code_scores_1_through_the_virl_reward_path(ladders, domain):
    gold = ladders[domain].scores[:, 0]
    assert np.all(gold >= 0.99), gold


@pytest.fixture(scope="module")
def evaluator_gold(ladders):
    from vinci_jax.evaluate.evaluator import EvalConfig, Evaluator
    from vinci_jax.evaluate.loaders import _synthetic_render_options
    from vinci_jax.evaluate.samples import make_sample

    samples, codes = [], []
    for domain, ladder in ladders.items():
        for rungs in ladder.rungs:
            sample = make_sample("synthetic", domain, f"{domain}-{rungs.seed}", rungs.target_png, rungs.codes[0])
            sample.render_options = _synthetic_render_options(domain)
            samples.append(sample)
            codes.append(rungs.codes[0])
    result = Evaluator(EvalConfig(num_workers=2)).evaluate("synthetic", samples, codes)
    return {row["id"]: row["metrics"] for row in result.rows}, result.summary


@pytest.mark.parametrize("domain", DOMAINS)
def test_gold_code_scores_1_through_the_evaluator(evaluator_gold, domain):
    metrics = [m for key, m in evaluator_gold[0].items() if key.startswith(domain + "-")]
    assert len(metrics) == TARGETS and min(m["visual"] for m in metrics) >= 0.99, metrics


def test_evaluator_prints_visual_beside_its_anchors(evaluator_gold):
    rows, summary = evaluator_gold
    for metrics in rows.values():
        assert metrics["visual_gold"] >= 0.99 and metrics["visual_trivial"] <= 0.4
        assert metrics["visual_normalised"] == pytest.approx(
            (metrics["visual"] - metrics["visual_trivial"]) / (metrics["visual_gold"] - metrics["visual_trivial"])
        )
    for domain in DOMAINS:
        assert {"visual", "visual_trivial", "visual_gold", "visual_normalised"} <= set(summary["by_domain"][domain])


def test_spearman_matches_known_values():
    assert spearman([0, 1, 2, 3], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 3], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one adjacent swap among 4: 1 - 6 * 2 / (4 * 15)
    assert spearman([0, 1, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([0, 1, 2], [5, 5, 5]) == 0.0
