"""Reward ladder: the mean reward per perturbation rung and domain, for the offline encoder and DINOv2.

Targets come from the synthetic generators; every rung (gold, small change, missing element, wrong structure,
unrelated drawing, trivial output) is rendered and scored through the ViRL reward path (vinci_jax/reward/ladder.py).
A good reward falls with the severity: `spearman` (of the rung means against severity, sign flipped) near 1,
gold 1.0, trivial low. DINOv2 runs with --dinov2 HF_DIR weights when given; without them a randomly initialised
DINOv2 (small shapes) is scored, which shows the plumbing only: its numbers say nothing about DINOv2's ranking.
The JSON object is the last line of the output.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

DOMAINS = ("chart", "svg", "web", "tikz", "chem")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vinci_jax.bench reward_ladder", description=__doc__.splitlines()[0])
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated synthetic domains")
    p.add_argument("--targets", type=int, default=4, help="targets (ladders) per domain")
    p.add_argument("--difficulty", type=int, default=1, choices=(0, 1, 2), help="generator difficulty")
    p.add_argument("--dinov2", default=None, help="local HF Dinov2Model dir; omitted: random-init DINOv2 (plumbing)")
    p.add_argument("--no-dinov2", action="store_true", help="score the offline encoder only")
    p.add_argument("--workers", type=int, default=2, help="render workers")
    return p


def _random_dinov2():
    from flax import nnx

    from vinci_jax.models.dinov2.config import Dinov2Config
    from vinci_jax.models.dinov2.modeling import Dinov2Model
    from vinci_jax.reward.encoders import Dinov2Encoder

    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=32, image_size=448)
    return Dinov2Encoder(Dinov2Model(config, rngs=nnx.Rngs(0)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    from renderers import RenderPool
    from vinci_jax.reward.config import ENCODER_DINOV2, ENCODER_OFFLINE, RewardConfig
    from vinci_jax.reward.ladder import RUNGS, run_ladder
    from vinci_jax.reward.visual import VisualReward

    domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    rewards = {"offline": VisualReward(RewardConfig(encoder=ENCODER_OFFLINE))}
    if not args.no_dinov2:
        if args.dinov2:
            rewards["dinov2"] = VisualReward(RewardConfig(encoder=ENCODER_DINOV2, encoder_path=args.dinov2))
        else:
            rewards["dinov2_random_init"] = VisualReward(RewardConfig(), encoder=_random_dinov2())
    out: dict[str, Any] = {"bench": "reward_ladder", "rungs": list(RUNGS), "targets_per_domain": args.targets}
    if "dinov2_random_init" in rewards:
        out["note"] = "dinov2_random_init: random weights, plumbing only; its ranking means nothing"
    pool = RenderPool(num_workers=args.workers, languages=["html", "latex", "python", "svg"])
    try:
        for name, reward in rewards.items():
            start = time.perf_counter()
            ladders = run_ladder(domains, args.targets, reward, pool, args.difficulty)
            result = {domain: ladder.as_dict() for domain, ladder in ladders.items()}
            print(f"encoder {name} ({reward.encoder_label})")
            print(f"  {'domain':8s}" + "".join(f"{rung:>17s}" for rung in RUNGS) + "  spearman")
            for domain, row in result.items():
                cells = "".join(f"{row['means'][rung]:17.3f}" for rung in RUNGS)
                print(f"  {domain:8s}{cells}  {row['spearman']:+.3f}")
            trivial = [row["means"]["trivial"] for row in result.values()]
            out[name] = {
                "encoder": reward.encoder_label,
                "domains": result,
                "min_spearman": min(row["spearman"] for row in result.values()),
                "mean_trivial": round(sum(trivial) / len(trivial), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
    finally:
        pool.close()
    return out
