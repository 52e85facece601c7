"""The demo as a benchmark: run `configs/demo.py[:preset]` end to end and report whether its result holds.

The bar (issue 21): the SFT policy's held-out normalised reward is clearly above 0 (it draws something that resembles
the target, not less than a blank canvas), and ViRL's overall held-out gain over its SFT starting point has a paired
bootstrap 95% interval above zero. With --baseline, SFT is also continued from the same checkpoint for ViRL's wall
time and ViRL's gain over that (equal extra compute) is reported with its interval. Prints the demo's own lines, then
the figures as a JSON object on the last line (a change that breaks the demo's learning shows up here, not in a
timed test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="configs/demo.py preset (cpu or smoke)")
    parser.add_argument("--workdir", default="/tmp/vinci_jax/bench_demo")
    parser.add_argument("--baseline", action="store_true", help="also continue SFT for ViRL's wall time and compare")
    args = parser.parse_args(argv)

    from configs import demo as demo_configs
    from vinci_jax import demo

    config = demo_configs.get_config(args.preset)
    config.workdir = args.workdir
    config.baseline = bool(args.baseline)
    began = time.perf_counter()
    demo.run(config)
    wall = time.perf_counter() - began
    summary = json.loads((Path(args.workdir) / "report" / "summary.json").read_text())
    held_out = {stage: figures["table"]["all"] for stage, figures in summary["held_out"].items()}
    gains = {name: g["all"] for name, g in summary["gains"].items()}
    return {
        "benchmark": "demo",
        "preset": args.preset,
        "wall_s": round(wall, 1),
        "stages_s": {name: t["seconds"] for name, t in demo.TIMINGS.items()},
        "encoder": summary["encoder"],
        "held_out": held_out,
        "gains": gains,
        "per_domain_gain": summary["gains"]["ViRL - SFT"],
        "sft_above_trivial": held_out["after_sft"]["normalised"] > 0.05,
        "virl_gain_excludes_zero": gains["ViRL - SFT"]["low"] > 0.0,
        "report": str(Path(args.workdir) / "report" / "report.html"),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
