"""`python -m vinci_jax.evaluate --suite NAME --data PATH (--model DIR_OR_CKPT | --predictions FILE) --out DIR`.

Generates greedily with our sampler (or reads predictions made elsewhere), renders in the renderers sandbox,
scores every metric of the suite and writes DIR/results.jsonl, DIR/summary.json, DIR/summary.md, DIR/gallery.html.
Suites and data layouts: see vinci_jax/evaluate/loaders.py. Exit status 2 on unusable inputs.
"""

from __future__ import annotations

import argparse
import json
import sys

from vinci_jax.evaluate.loaders import LOADERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True, choices=sorted(LOADERS))
    parser.add_argument("--data", required=True, help="the benchmark release / synthetic dataset directory or file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="HF checkpoint dir or Orbax training checkpoint (generates greedily)")
    source.add_argument("--predictions", help="JSONL of {id, code} or {id, response} made elsewhere")
    parser.add_argument("--out", required=True, help="output directory for the report")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--max_new_tokens", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--engine",
        choices=("lockstep", "paged"),
        default="lockstep",
        help="generation: the lockstep sampler or the paged rollout engine (the same responses)",
    )
    parser.add_argument("--reward_encoder", default=None, help="local DINOv2 dir for the visual similarity")
    parser.add_argument("--clip", default=None, help="local CLIP dir for the CLIP terms (Design2Code, UniSVG)")
    parser.add_argument("--workers", type=int, default=1, help="sandboxed render workers")
    parser.add_argument("--timeout_s", type=float, default=20.0, help="per-render wall-clock limit")
    args = parser.parse_args(argv)

    from vinci_jax.evaluate.api import read_predictions
    from vinci_jax.evaluate.evaluator import EvalConfig, Evaluator
    from vinci_jax.evaluate.generation import codes_from_responses, generate_responses
    from vinci_jax.evaluate.loaders import load_suite
    from vinci_jax.evaluate.report import write_report

    try:
        loaded = load_suite(args.suite, args.data, args.limit)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in loaded.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    samples = loaded.samples
    if not samples:
        print(f"error: no usable samples in {args.data!r} for suite {args.suite}", file=sys.stderr)
        return 2
    responses = None
    if args.predictions:
        try:
            codes, unknown = read_predictions(args.predictions, samples)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if unknown:
            print(f"warning: {len(unknown)} predictions name no evaluated sample (e.g. {unknown[:3]})", file=sys.stderr)
    else:
        from vinci_jax.policy import load_policy

        model, processor = load_policy(args.model)
        responses = generate_responses(model, processor, samples, max_new_tokens=args.max_new_tokens,
                                       batch_size=args.batch_size, engine=args.engine)  # fmt: skip
        codes = codes_from_responses(samples, responses)
    config = EvalConfig(reward_encoder_path=args.reward_encoder, clip_path=args.clip, num_workers=args.workers,
                        timeout_s=args.timeout_s)  # fmt: skip
    with Evaluator(config) as evaluator:
        result = evaluator.evaluate(args.suite, samples, codes)
    if responses is not None:
        for row, response in zip(result.rows, responses, strict=True):
            row["response"] = response
    result.summary["skipped_rows"] = loaded.skipped
    paths = write_report(args.out, result.rows, result.summary, result.images)  # a gs:// --out is uploaded
    print(json.dumps({"summary": paths["summary"], **{k: result.summary[k] for k in ("suite", "num_samples",
                      "execution_rate")}, "metrics": result.summary["metrics"]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
