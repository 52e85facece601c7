"""`python -m vinci_jax.generate --model DIR_OR_CKPT --image IMG --prompt TEXT [--n 8 --temperature 1.0]`.

Samples n responses for one image and prompt (with the rollout engine, or `--engine lockstep` the reference
sampler: the same samples for the same seed) and prints them (and, with --json, one JSON
object per sample). DIR_OR_CKPT is an HF checkpoint directory or an Orbax training checkpoint (see vinci_jax.policy).
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF checkpoint dir or Orbax checkpoint (workdir or step)")
    parser.add_argument("--image", required=True, help="input image file")
    parser.add_argument("--prompt", required=True, help="user text; the image is placed before it")
    parser.add_argument("--n", type=int, default=8, help="samples (one shared prefill)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding (n is forced to 1)")
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("paged", "lockstep"), default="paged",
                        help="paged: the continuous-batching rollout engine; lockstep: the reference sampler "
                        "(same samples for the same seed)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object per sample instead of text")
    args = parser.parse_args(argv)

    from vinci_jax.paths import as_path
    from vinci_jax.policy import load_policy
    from vinci_jax.sampling import SamplingParams, make_prompt_batch
    from vinci_jax.sampling.engine import make_generator

    try:
        with as_path(args.image).open("rb") as f:  # gs:// too
            image = Image.open(f).convert("RGB")
    except OSError as err:
        print(f"error: cannot read image {args.image}: {err}", file=sys.stderr)
        return 2
    model, processor = load_policy(args.model)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    prompt = processor(messages, [image], add_generation_prompt=True)
    batch = make_prompt_batch([prompt], model.config, processor.pad_token_id)
    params = SamplingParams(
        n=1 if args.greedy else args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        greedy=args.greedy,
    )
    stops = (processor.im_end_token_id, processor.pad_token_id)
    sampler = make_generator(args.engine, model, stops, processor.pad_token_id)
    out = sampler.generate(batch, params, jax.random.key(args.seed))
    for row in range(out.tokens.shape[0]):
        ids = out.response_ids(row)
        text = processor.decode(ids[:-1] if out.finished[row] else ids)
        if args.json:
            print(json.dumps({"sample": row, "text": text, "tokens": int(out.lengths[row]),
                              "finished": bool(out.finished[row]),
                              "logprob": float(out.logprobs[row, : out.lengths[row]].sum())}))  # fmt: skip
        else:
            print(f"--- sample {row} ({out.lengths[row]} tokens{', stopped' if out.finished[row] else ''}) ---")
            print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
