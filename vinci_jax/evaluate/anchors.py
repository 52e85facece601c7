"""Anchors for reward figures: what a trivial output scores and what the gold code scores on the same targets.

A reward alone does not say whether a policy draws anything: a blank canvas already earns part of it. Every reward
figure the demo and the evaluator print therefore stands beside two anchors on the same targets, the trivial
output's score (a blank canvas of the target's size, or the smallest program of the domain: one atom for RDKit) and
the gold code's score, and a normalised score (r - trivial) / (gold - trivial): 0 is no better than drawing
nothing, 1 is as good as the gold code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
