"""`python -m vinci_jax.evaluate.bench --data SYNTH_DIR [--limit N] [--workers W]`: evaluator throughput.

Scores the gold answers of a synthetic split as predictions (so every render succeeds and every metric runs), one
domain at a time on warm pools, and prints a JSON object as its last line: samples/s overall and per domain, pool
start-up seconds, and the lowest per-domain mean of each metric (1.0 when renderers are deterministic).
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.evaluate.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="synthetic ArrayRecord dataset directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--mutations",
        action="store_true",
        help="instead: score the flawed code of refine records, mean metrics per (domain, mutation)",
    )
    args = parser.parse_args(argv)
    if args.mutations:
        return _mutations(args)

    from vinci_jax.evaluate.evaluator import EvalConfig, Evaluator
    from vinci_jax.evaluate.loaders import load_synthetic

    samples = load_synthetic(args.data, args.split).samples[: args.limit]
    domains = sorted({s.domain for s in samples})
    report: dict = {"samples": len(samples), "workers": args.workers, "per_domain": {}}
    with Evaluator(EvalConfig(num_workers=args.workers)) as evaluator:
        started = time.monotonic()
        # warm-up: one sample per domain starts every pool and compiles the similarity once
        warm = [next(s for s in samples if s.domain == d) for d in domains]
        evaluator.evaluate("synthetic", warm, [s.gold_code for s in warm])
        evaluator.clear_gold_cache()
        report["startup_s"] = round(time.monotonic() - started, 2)
        total, metrics = 0.0, {}
        for domain in domains:
            group = [s for s in samples if s.domain == domain]
            t0 = time.monotonic()
            result = evaluator.evaluate("synthetic", group, [s.gold_code for s in group])
            seconds = time.monotonic() - t0
            total += seconds
            report["per_domain"][domain] = {"samples": len(group), "samples_per_s": round(len(group) / seconds, 3)}
            for name, value in result.summary["metrics"].items():
                metrics.setdefault(name, []).append(value)
    report["samples_per_s"] = round(len(samples) / total, 3) if total else None
    report["metric_min_over_domains"] = {k: min(v) for k, v in metrics.items() if None not in v}
    print(json.dumps(report))
    return 0


def _mutations(args: argparse.Namespace) -> int:
    """Metric sensitivity: each synthetic mutation (wrong colour, missing element, ...) should lower the metric
    components it is about and leave the others near 1."""
    from collections import defaultdict

    from vinci_data.records import read_records

    from vinci_jax.evaluate.evaluator import EvalConfig, Evaluator
    from vinci_jax.evaluate.loaders import records_to_sample

    records = [r for r in read_records(args.data, args.split) if r.task == "refine" and r.meta.get("flawed_code")]
    records = records[: args.limit]
    if not records:
        print(f"error: no refine records in split {args.split!r} of {args.data!r}")
        return 2
    samples = [records_to_sample(r) for r in records]
    with Evaluator(EvalConfig(num_workers=args.workers)) as evaluator:
        result = evaluator.evaluate("synthetic", samples, [r.meta["flawed_code"] for r in records])
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record, row in zip(records, result.rows, strict=True):
        for name, value in row["metrics"].items():
            if value is not None:
                groups[f"{record.domain}/{record.meta.get('mutation')}"][name].append(value)
    table = {k: {"n": len(v["execution"])} | {m: round(sum(x) / len(x), 3) for m, x in v.items()}
             for k, v in sorted(groups.items())}  # fmt: skip
    print(json.dumps({"records": len(records), "by_mutation": table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
