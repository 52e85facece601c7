"""Optional scorers: CLIP from local weights (a tiny random CLIP saved by the test) and a plugged-in judge."""

import numpy as np
import pytest

from vinci_jax.evaluate import EvalConfig, Evaluator, make_sample, summarize

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="{r}" fill="teal"/></svg>'


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


class PixelJudge:
    """A stand-in judge plug-in: rates 1 when the render equals the target pixel for pixel, else 0."""

    metrics = ("judge_rating",)

    def score(self, sample, code, rendered, target):
        if rendered is None or target is None:
            return {"judge_rating": 0.0}
        return {"judge_rating": float(np.array_equal(np.asarray(rendered), np.asarray(target)))}


def test_clip_and_judge_scores_are_computed_when_given(tiny_clip_dir):
    gold = SVG.format(r=3)
    samples = [make_sample("plot2code", "svg", name, None, gold) for name in ("gold", "bigger")]
    with Evaluator(EvalConfig(clip_path=str(tiny_clip_dir)), judge=PixelJudge()) as evaluator:
        result = evaluator.evaluate("plot2code", samples, [gold, SVG.format(r=4.5)])
    gold_row, other_row = result.rows
    assert gold_row["metrics"]["clip"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= other_row["metrics"]["clip"] <= 1.0
    assert gold_row["metrics"]["judge_rating"] == 1.0 and other_row["metrics"]["judge_rating"] == 0.0
    assert result.summary["metrics"]["judge_rating"] == 0.5
    assert "clip" not in result.summary["not_computed"] and "judge_rating" not in result.summary["not_computed"]


def test_summary_names_the_judge_scores_it_could_not_compute():
    rows = [{"domain": "chart", "executed": True, "status": "ok", "metrics": {"execution": 1.0, "text_f1": 0.5}}]
    summary = summarize("chartmimic", rows)
    assert "high_level" in summary["not_computed"] and summary["metrics"] == {"execution": 1.0, "text_f1": 0.5}


def test_visual_similarity_with_local_dinov2_weights(tmp_path):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=96,
                             patch_size=32)).save_pretrained(tmp_path)  # fmt: skip
    gold = SVG.format(r=3)
    samples = [make_sample("unisvg", "svg", name, None, gold) for name in ("gold", "smaller")]
    with Evaluator(EvalConfig(reward_encoder_path=str(tmp_path))) as evaluator:
        result = evaluator.evaluate("unisvg", samples, [gold, SVG.format(r=1)])
    assert "dinov2" in result.summary["visual_encoder"].lower()
    assert result.rows[0]["metrics"]["visual"] == pytest.approx(1.0, abs=1e-6)
    assert result.rows[1]["metrics"]["visual"] < 1.0
