"""Anchors for reward figures: what a trivial output scores and what the gold code scores on the same targets.

A reward alone does not say whether a policy draws anything: a blank canvas already earns part of it. Every reward
figure the demo and the evaluator print therefore stands beside two anchors on the same targets, the trivial
output's score (a blank canvas of the target's size, or the smallest program of the domain: one atom for RDKit) and
the gold code's score, and a normalised score (r - trivial) / (gold - trivial): 0 is no better than drawing
nothing, 1 is as good as the gold code.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LANGUAGE_OF_DOMAIN = {"chart": "python", "chem": "python", "svg": "svg", "web": "html", "tikz": "latex"}


def trivial_code(domain: str, width: int, height: int) -> str:
    """The trivial output of `domain` for a width x height target: a blank canvas, or one atom for RDKit."""
    if domain == "chart":
        return (
            "import matplotlib.pyplot as plt\n\n"
            f"fig = plt.figure(figsize=({width / 100:.2f}, {height / 100:.2f}), dpi=100)\nplt.show()\n"
        )
    if domain == "chem":
        return (
            "from rdkit import Chem\nfrom rdkit.Chem.Draw import rdMolDraw2D\n\n"
            f"drawer = rdMolDraw2D.MolDraw2DCairo({width}, {height})\n"
            "drawer.DrawMolecule(Chem.MolFromSmiles('C'))\ndrawer.FinishDrawing()\n"
            "drawer.WriteDrawingText('molecule.png')\n"
        )
    if domain == "svg":
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>\n'
    if domain == "web":
        return '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"></head>\n<body></body>\n</html>\n'
    if domain == "tikz":
        # pdflatex pages are cropped to their content, so the blank canvas is an invisible rectangle of the size
        w_cm, h_cm = width / 300 * 2.54, height / 300 * 2.54
        return (
            "\\documentclass{article}\n\\usepackage{tikz}\n\\begin{document}\n\\begin{tikzpicture}\n"
            f"  \\path[use as bounding box] (0,0) rectangle ({w_cm:.2f},{h_cm:.2f});\n"
            "  \\fill[white] (0,0) rectangle (0.01,0.01);\n\\end{tikzpicture}\n\\end{document}\n"
        )
    raise ValueError(f"no trivial output for domain {domain!r}; known: {sorted(LANGUAGE_OF_DOMAIN)}")


def normalised(reward: float, trivial: float, gold: float) -> float:
    """(r - trivial) / (gold - trivial); NaN when gold does not beat trivial (the anchors cannot scale)."""
    span = gold - trivial
    return float((reward - trivial) / span) if span > 1e-9 else float("nan")


@dataclass(frozen=True)
class Anchored:
    """A mean reward over some targets beside its anchors on the same targets."""

    reward: float
    trivial: float
    gold: float

    @property
    def normalised(self) -> float:
        return normalised(self.reward, self.trivial, self.gold)

    def as_dict(self) -> dict[str, float]:
        return {"reward": self.reward, "trivial": self.trivial, "gold": self.gold, "normalised": self.normalised}

    def __str__(self) -> str:
        return (
            f"reward {self.reward:.3f} (trivial {self.trivial:.3f}, gold {self.gold:.3f}, "
            f"normalised {self.normalised:+.3f})"
        )


def per_sample_normalised(rewards: Sequence[float], trivial: Sequence[float], gold: Sequence[float]) -> np.ndarray:
    """Normalised reward per sample (for paired statistics); samples whose anchors cannot scale are NaN."""
    r, t, g = (np.asarray(x, np.float64) for x in (rewards, trivial, gold))
    span = g - t
    return np.where(span > 1e-9, (r - t) / np.where(span > 1e-9, span, 1.0), np.nan)


def _image(result: Any) -> Any:
    from PIL import Image

    if result is None or not getattr(result, "ok", False) or result.png is None:
        return None
    return Image.open(io.BytesIO(result.png)).convert("RGB")


def visual_anchors(evaluator: Any, samples: Sequence[Any], targets: Sequence[Any], gold: Sequence[Any]) -> list[dict]:
    """Per sample, the evaluator's `visual` anchors on the same target: `visual_trivial` (the trivial output of the
    sample's domain rendered with its options), `visual_gold` (the gold code's render; None without gold code) and
    `visual_normalised`, filled in by `with_normalised` once the prediction's visual score is known."""
    jobs = [
        (trivial_code(s.domain, *t.size), s.language, s.domain, s.render_options)
        if t is not None and s.domain in LANGUAGE_OF_DOMAIN
        else None
        for s, t in zip(samples, targets, strict=True)
    ]
    # gold code the evaluator did not need to run (its metrics use the release's picture) is rendered here
    gold_jobs = [
        (s.gold_code, s.language, s.domain, s.render_options) if g is None and s.gold_code and t is not None else None
        for s, t, g in zip(samples, targets, gold, strict=True)
    ]
    results = evaluator.executor.run(jobs + gold_jobs)
    n = len(samples)
    gold = [g if g is not None else r for g, r in zip(gold, results[n:], strict=True)]
    trivial = evaluator.visual_similarity(targets, [_image(r) for r in results[:n]])
    gold_visual = evaluator.visual_similarity(targets, [_image(g) for g in gold])
    return [
        {
            "visual_trivial": t if job is not None else None,
            "visual_gold": g if s.gold_code else None,
        }
        for s, job, t, g in zip(samples, jobs, trivial, gold_visual, strict=True)
    ]


def with_normalised(anchors: dict, visual: float | None) -> dict:
    """The anchors plus `visual_normalised` of the prediction's visual score (None when it cannot be scaled)."""
    trivial, gold = anchors.get("visual_trivial"), anchors.get("visual_gold")
    value = None
    if visual is not None and trivial is not None and gold is not None and gold - trivial > 1e-9:
        value = normalised(visual, trivial, gold)
    return {**anchors, "visual_normalised": value}
