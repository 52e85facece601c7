"""The batch evaluator: predictions (code) for EvalSamples -> per-sample rows with every metric of their domain.

Metric families by sample domain (definitions and sources in the metric modules):
- every sample: `execution` (the code rendered: status ok) and `visual` (the ViRL reward's visual similarity of the
  render to the target: DINOv2 tiles when weights are given, else the weight-free offline similarity);
- chart: ChartMimic low-level `text_f1`, `layout_f1`, `type_f1`, `color_f1`, `low_level` (0 for a run that fails
  before its first savefig/show, as ChartMimic's published means count it; what it drew is kept in the row as
  `chartmimic_failed_run`), Plot2Code `text_match` (None for predictions that do not run or render all white:
  Plot2Code leaves them out);
- web: Design2Code `block_match`, `text`, `position`, `color` (+ `clip` with local CLIP weights);
- svg: UniSVG `ssim` at 336x336, None for an unrenderable prediction (left out, as UniSVG does) (+ `clip` with
  local CLIP weights; LPIPS is never computed offline);
- tikz: `ssim` (compile rate is the execution rate);
- chem: `validity`, `tanimoto` of the drawn molecule.
A prediction that does not execute keeps its row (status, error) and scores 0 on every metric that has a gold
reference, except where the official evaluator does otherwise (Plot2Code, UniSVG: left out; ChartMimic: an error
after the first savefig/show does not count); a metric without a usable reference (no gold code, gold code that
fails) is None and reported.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from vinci_jax.evaluate.anchors import visual_anchors, with_normalised
from vinci_jax.evaluate.chart_metrics import CHARTMIMIC_METRICS, chartmimic_scores, text_match
from vinci_jax.evaluate.design_metrics import DESIGN2CODE_METRICS, design2code_scores
from vinci_jax.evaluate.execute import Executor
from vinci_jax.evaluate.image_metrics import ssim
from vinci_jax.evaluate.judge import JUDGE_METRICS, Judge
from vinci_jax.evaluate.molecule_metrics import (
    MOLECULE_METRICS,
    canonical,
    drawn_smiles,
    molecule_scores,
    static_smiles,
)
from vinci_jax.evaluate.samples import EvalSample

DOMAIN_METRICS: dict[str, tuple[str, ...]] = {
    "chart": (*CHARTMIMIC_METRICS, "text_match"),
    "web": DESIGN2CODE_METRICS,
    "svg": ("ssim",),
    "tikz": ("ssim",),
    "chem": MOLECULE_METRICS,
    "other": (),
}
CLIP_DOMAINS = ("web", "svg")
NOT_COMPUTED_OFFLINE = {
    "lpips": "UniSVG's LPIPS term needs LPIPS network weights, which are not available offline",
}
TIKZ_NOT_COMPUTED = {
    "detikzify": "DeTikZify's metrics (ImageSim/SigLIP, CLIPScore, DreamSim, KID need weights; CrystalBLEU the DaTikZ "
    "train set; TeX edit distance not implemented): the TikZ `ssim` is ours, not an official TikZ metric",
}


@dataclasses.dataclass
class EvalConfig:
    """reward_encoder_path: local HF DINOv2 dir for the visual similarity (None: offline similarity).
    clip_path: local HF CLIP dir for the Design2Code / UniSVG CLIP terms (None: not computed)."""

    reward_encoder_path: str | None = None
    clip_path: str | None = None
    num_workers: int = 1
    timeout_s: float = 20.0


@dataclasses.dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    images: dict[str, tuple[Image.Image | None, Image.Image | None]]  # id -> (target, prediction)


def _png_image(result: Any) -> Image.Image | None:
    if result is None or not result.ok or result.png is None:
        return None
    return result.image()


def _trace(result: Any, kind: str) -> dict[str, Any] | None:
    trace = getattr(result, "trace", None) or {}
    value = trace.get(kind)
    return value if isinstance(value, dict) and "error" not in value else None


class Evaluator:
    """Scores predictions; reuse one Evaluator across calls (pools and the reward model stay warm)."""

    def __init__(self, config: EvalConfig | None = None, judge: Judge | None = None) -> None:
        self.config = config or EvalConfig()
        self.judge = judge
        self.executor = Executor(self.config.num_workers, self.config.timeout_s)
        self._reward = None
        self._clip = None
        self._gold_cache: dict[tuple[str, ...], Any] = {}

    # ---------------------------------------------------------------- helpers
    def clear_gold_cache(self) -> None:
        """Forget gold renders/traces (they are kept across evaluate() calls on the same samples)."""
        self._gold_cache.clear()

    def reward(self):
        if self._reward is None:
            from vinci_jax.reward.config import ENCODER_DINOV2, ENCODER_OFFLINE, RewardConfig
            from vinci_jax.reward.visual import VisualReward

            path = self.config.reward_encoder_path
            config = RewardConfig(encoder=ENCODER_DINOV2, encoder_path=path) if path else RewardConfig(
                encoder=ENCODER_OFFLINE
            )  # fmt: skip
            self._reward = VisualReward(config)
        return self._reward

    def visual_similarity(self, targets: Sequence[Image.Image | None], renders: Sequence[Image.Image | None]):
        """The reward's visual term per pair (0 where there is no render; None where there is no target)."""
        out: list[float | None] = [None] * len(targets)
        idx = [i for i, t in enumerate(targets) if t is not None]
        for start in range(0, len(idx), 16):
            chunk = idx[start : start + 16]
            batch = self.reward().score(
                ["python"] * len(chunk),
                ["```python\n#\n```"] * len(chunk),
                [targets[i] for i in chunk],
                [renders[i] for i in chunk],
                group_ids=chunk,
            )
            for i, value in zip(chunk, batch.terms["visual"], strict=True):
                out[i] = float(value)
        return out

    def clip(self):
        if self._clip is None and self.config.clip_path:
            from vinci_jax.evaluate.clip import ClipScorer

            self._clip = ClipScorer(self.config.clip_path)
        return self._clip

    def _gold_results(self, samples: Sequence[EvalSample]) -> list[Any]:
        jobs, keys = [], []
        for s in samples:
            key = (s.language, s.domain, s.gold_code or "", repr(sorted(s.render_options.items())))
            keys.append(key)
            needs = bool(s.gold_code) and key not in self._gold_cache and _needs_gold_run(s)
            jobs.append((s.gold_code, s.language, s.domain, s.render_options) if needs else None)
        for key, result in zip(keys, self.executor.run(jobs), strict=True):
            if result is not None:
                self._gold_cache[key] = result
        return [self._gold_cache.get(k) for k in keys]

    # ---------------------------------------------------------------- main entry
    def evaluate(self, suite: str, samples: Sequence[EvalSample], codes: Sequence[str | None]) -> EvalResult:
        """Score `codes[i]` (None: the model gave no code block) against `samples[i]`."""
        if len(samples) != len(codes):
            raise ValueError(f"{len(samples)} samples but {len(codes)} predictions")
        started = time.monotonic()
        gold = self._gold_results(samples)
        preds = self.executor.run(
            [
                None if c is None else (c, s.language, s.domain, s.render_options)
                for s, c in zip(samples, codes, strict=True)
            ]
        )
        targets, renders = [], []
        for s, g, p in zip(samples, gold, preds, strict=True):
            target = s.target_image() if s.image is not None else _png_image(g)
            targets.append(target)
            renders.append(_png_image(p))
        visual = self.visual_similarity(targets, renders)
        anchors = visual_anchors(self, samples, targets, gold)  # trivial-output and gold visual on the same targets
        rows = []
        images = {}
        for i, (s, code, g, p) in enumerate(zip(samples, codes, gold, preds, strict=True)):
            row = self._score_row(s, code, g, p, targets[i], renders[i])
            row["metrics"]["visual"] = visual[i]
            row["metrics"].update(with_normalised(anchors[i], visual[i]))
            if row["status"] == "infra":  # the renderer failed, not the model: reported, never scored as 0
                row["metrics"] = dict.fromkeys(row["metrics"])
                row["notes"].append("not scored: the renderer itself failed (status infra)")
            rows.append(row)
            images[s.id] = (targets[i], renders[i])
        summary = summarize(suite, rows, self)
        summary["seconds"] = round(time.monotonic() - started, 2)
        return EvalResult(rows, summary, images)

    def _score_row(self, s: EvalSample, code: str | None, gold: Any, pred: Any, target, render) -> dict[str, Any]:
        executed = pred is not None and pred.ok
        row: dict[str, Any] = {
            "id": s.id,
            "suite": s.suite,
            "domain": s.domain,
            "language": s.language,
            "executed": executed,
            "status": "no_code" if pred is None else pred.status,
            "error": "no code block of the expected language" if pred is None else pred.error,
            "blank": bool(getattr(pred, "blank", False)),
            "code": code,
            "metrics": {"execution": float(executed)},
            "notes": [],
        }
        metrics = row["metrics"]
        names = DOMAIN_METRICS[s.domain]
        gold_ok = gold is not None and gold.ok
        if s.domain == "chart":
            g, p = _trace(gold, "matplotlib"), _trace(pred, "matplotlib")
            infra = [r["chartmimic"]["infra_error"] for r in (g, p) if r and r["chartmimic"].get("infra_error")]
            if not gold_ok or g is None:
                metrics.update(dict.fromkeys(names, None))
                row["notes"].append(_gold_note(s, gold))
            elif infra:  # never score an infrastructure failure as the model's
                metrics.update(dict.fromkeys(names, None))
                row["notes"].append(f"trace infrastructure failure: {infra[0]}")
            else:
                # ChartMimic scores each run on what it drew (its runs are wrapped in try/except), but its published
                # means (get_results.ipynb, filter "code_pass") count only runs that reach their first savefig/show
                # without error and divide by all samples: a failing run adds 0. Its own scores stay in the row.
                empty = {"texts": [], "layout": [], "types": {}, "colors": [], "num_axes": 0}
                graph = s.suite == "chartmimic" and s.id.startswith("graph")
                record = (p or {}).get("chartmimic", empty)
                scores = chartmimic_scores(g["chartmimic"], record, graph=graph)
                if executed or record.get("frozen_at") in ("savefig", "show"):
                    metrics.update(scores)
                else:
                    metrics.update(dict.fromkeys(CHARTMIMIC_METRICS, 0.0))
                    row["chartmimic_failed_run"] = scores
                    row["notes"].append("ChartMimic: the run failed before its first savefig/show (0 in the means)")
                # Plot2Code leaves out predictions that do not run or render all white
                if executed and p is not None and not _all_white(render):
                    metrics["text_match"] = text_match(g["plot2code"], p["plot2code"])
                else:
                    metrics["text_match"] = None
                    row["notes"].append("text_match: prediction did not run or rendered all white (left out)")
        elif s.domain == "web":
            g, p = _trace(gold, "html"), _trace(pred, "html")
            if not gold_ok or g is None:
                metrics.update(dict.fromkeys(names, None))
                row["notes"].append(_gold_note(s, gold))
            elif not executed or p is None:
                metrics.update(dict.fromkeys(names, 0.0))
            else:
                metrics.update(design2code_scores(g, p))
        elif s.domain == "svg":  # UniSVG leaves out predictions that do not render
            metrics["ssim"] = None if target is None or render is None else ssim(target, render)
            if render is None:
                row["notes"].append("ssim: prediction did not render (left out, as UniSVG does)")
        elif s.domain == "tikz":  # no official TikZ SSIM: a failed compile scores 0 (compile rate is `execution`)
            metrics["ssim"] = None if target is None else (ssim(target, render) if render is not None else 0.0)
        elif s.domain == "chem":
            gold_smiles = s.meta.get("smiles")
            if not gold_smiles and s.gold_code:
                gold_smiles, _ = drawn_smiles(s.gold_code, getattr(gold, "trace", None))
            if executed:
                smiles, source = drawn_smiles(code or "", getattr(pred, "trace", None))
            else:
                smiles, source = None, "not executed"
            row["molecule"] = {"gold": canonical(gold_smiles) or gold_smiles, "pred": smiles, "source": source}
            metrics.update(molecule_scores(gold_smiles, smiles))
        if s.domain in CLIP_DOMAINS and self.clip() is not None:
            metrics["clip"] = None if target is None else (self.clip().score(target, render) if render else 0.0)
        if self.judge is not None:
            for name, value in self.judge.score(s, code, render, target).items():
                metrics[name] = value
        return row

    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _all_white(image: Image.Image | None) -> bool:
    """Plot2Code's skip test: every pixel value 255 (no render counts as white)."""
    if image is None:
        return True
    import numpy as np

    return bool(np.all(np.asarray(image) == 255))


def _needs_gold_run(s: EvalSample) -> bool:
    """Gold code runs only when a metric needs its trace or the release has no target picture."""
    if s.image is None or s.domain in ("chart", "web"):
        return True
    return s.domain == "chem" and not s.meta.get("smiles") and static_smiles(s.gold_code or "") is None


def _gold_note(sample: EvalSample, gold: Any) -> str:
    if not sample.gold_code:
        return "no gold code in this release: trace-based metrics not computed"
    if gold is None or not gold.ok:
        return f"gold code did not run ({getattr(gold, 'status', 'none')}: {getattr(gold, 'error', '')})"
    return "gold code drew nothing traceable"


def _mean(values: list[float]) -> float | None:
    return None if not values else sum(values) / len(values)


def summarize(suite: str, rows: Sequence[dict[str, Any]], evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Means of every metric over the rows that have it, overall and per domain, and what was not computed."""
    names: list[str] = []
    for row in rows:
        names += [m for m in row["metrics"] if m not in names]
    means = {m: _mean([r["metrics"][m] for r in rows if r["metrics"].get(m) is not None]) for m in names}
    counts = {m: sum(r["metrics"].get(m) is not None for r in rows) for m in names}
    by_domain: dict[str, dict[str, Any]] = {}
    for domain in sorted({r["domain"] for r in rows}):
        sub = [r for r in rows if r["domain"] == domain]
        by_domain[domain] = {"num_samples": len(sub)} | {
            m: _mean([r["metrics"][m] for r in sub if r["metrics"].get(m) is not None])
            for m in names
            if any(r["metrics"].get(m) is not None for r in sub)
        }
    not_computed: dict[str, str] = {}
    judge = getattr(evaluator, "judge", None)
    for name in JUDGE_METRICS.get(suite, ()):
        if judge is None or name not in judge.metrics:
            not_computed[name] = "judge-model score (GPT-4 family in the paper): pass a Judge to compute it"
    domains = {r["domain"] for r in rows}
    if domains & set(CLIP_DOMAINS) and not (evaluator and evaluator.config.clip_path):
        not_computed["clip"] = "needs local CLIP weights (--clip DIR)"
    if "svg" in domains:
        not_computed.update(NOT_COMPUTED_OFFLINE)
    if "tikz" in domains:
        not_computed.update(TIKZ_NOT_COMPUTED)
    for m in names:
        if counts[m] < len(rows) and counts[m] == 0:
            not_computed[m] = "no sample had a usable value (see row notes)"
    executed = sum(bool(r["executed"]) for r in rows)
    infra = sum(r["status"] == "infra" for r in rows)  # renderer failures: out of every rate and mean
    return {
        "suite": suite,
        "num_samples": len(rows),
        "executed": executed,
        "execution_rate": executed / (len(rows) - infra) if len(rows) > infra else None,
        "infra_failures": infra,
        "metrics": means,
        "counts": counts,
        "by_domain": by_domain,
        "not_computed": not_computed,
        "visual_encoder": evaluator.reward().encoder_label if evaluator else None,
        "statuses": _count([r["status"] for r in rows]),
    }


def _count(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
