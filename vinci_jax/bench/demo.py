"""The demo as a benchmark: run `configs/demo.py[:preset]` end to end and report whether its result still holds.

The issue's bar: after SFT at least 80% of held-out prompts execute, and ViRL raises the held-out mean reward over
the SFT policy. Prints the held-out figures per stage, the wall time, and `sft_execution_ok` / `virl_raises_reward`
as a JSON object on the last line (a change that breaks the demo's learning shows up here, not in a timed test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="configs/demo.py preset (cpu or smoke)")
    parser.add_argument("--workdir", default="/tmp/vinci_jax/bench_demo")
    args = parser.parse_args(argv)

    from configs import demo as demo_configs
    from vinci_jax import demo

    config = demo_configs.get_config(args.preset)
    config.workdir = args.workdir
    began = time.perf_counter()
    demo.run(config)
    wall = time.perf_counter() - began
    summary = json.loads((Path(args.workdir) / "report" / "summary.json").read_text())
    stages = {
        k: {m: summary[k][m] for m in ("execution", "format", "reward")}
        for k in ("random_init", "after_sft", "after_virl")
    }
    result = {
        "benchmark": "demo",
        "preset": args.preset,
        "wall_s": wall,
        "held_out": stages,
        "sft_execution_ok": stages["after_sft"]["execution"] >= 0.8,
        "virl_raises_reward": stages["after_virl"]["reward"] > stages["after_sft"]["reward"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
