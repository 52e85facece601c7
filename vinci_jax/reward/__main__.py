"""`python -m vinci_jax.reward score --prompt TEXT --response FILE --target T.png [--encoder HF_DIR]`.

Renders the response's code through `renderers` (the language comes from the prompt, as in training), scores it
against the target and prints one JSON object: the total, every term, the encoder used and the render outcome.
Without --encoder the weight-free offline similarity is used and named as such in the output.
"""

from __future__ import annotations

import argparse
import json
import sys

from PIL import Image

from vinci_jax.paths import as_path
from vinci_jax.reward.config import ENCODER_DINOV2, ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.visual import VisualReward


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.reward", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="render one response and score it against a target image")
    score.add_argument("--prompt", required=True, help="the prompt text (decides the code language)")
    score.add_argument("--response", required=True, help="file with the model response ('-' reads stdin)")
    score.add_argument("--target", required=True, help="target image file (PNG/JPEG)")
    score.add_argument("--encoder", default=None, help="HF Dinov2Model directory; omitted: offline similarity")
    score.add_argument("--feature", default="cls_pre_ln", choices=("cls_pre_ln", "cls_post_ln"))
    score.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    score.add_argument("--timeout", type=float, default=None, help="render time limit in seconds")
    return parser


def score_main(args: argparse.Namespace) -> dict:
    from renderers import render_one

    response = sys.stdin.read() if args.response == "-" else as_path(args.response).read_text()
    target_path = as_path(args.target)  # gs:// too
    if not target_path.exists():
        raise SystemExit(f"--target {target_path} does not exist")
    with target_path.open("rb") as f:
        target = Image.open(f).convert("RGB")
    config = RewardConfig(
        encoder=ENCODER_DINOV2 if args.encoder else ENCODER_OFFLINE,
        encoder_path=args.encoder,
        feature=args.feature,
        compute_dtype=args.dtype,
    )
    reward = VisualReward(config)
    job = reward.render_jobs([args.prompt], [response], {"timeout_s": args.timeout} if args.timeout else None)[0]
    result = None if job is None else render_one(job)
    batch = reward.score([args.prompt], [response], [target], [result])
    out = {name: float(values[0]) for name, values in batch.terms.items()}
    out.update(
        total=float(batch.total[0]),
        encoder=batch.stats["encoder"],
        language=None if job is None else job.language,
        render_status=batch.statuses[0],
        render_error=None if result is None else result.error,
        render_seconds=None if result is None else round(result.seconds, 3),
        target_size=list(target.size),
    )
    return out


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "score":
        print(json.dumps(score_main(args)))


if __name__ == "__main__":
    main()
