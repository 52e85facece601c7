"""`python -m vinci_jax.hf check DIR` and `python -m vinci_jax.hf export SRC OUT_DIR`.

check:  loads DIR in transformers (PyTorch, CPU) and in vinci_jax, runs one random batch (text, two images of
        different sizes, a padded row) in float32, prints a JSON line with the max abs logit difference and top-1
        agreement; exits 1 when the difference exceeds --tolerance.
export: SRC is an HF dir or an Orbax checkpoint (see vinci_jax.hf.export); writes an HF dir transformers loads.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.hf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="logit parity of DIR between transformers and vinci_jax")
    chk.add_argument("dir")
    chk.add_argument("--tolerance", type=float, default=1e-4)
    chk.add_argument("--seed", type=int, default=0)
    exp = sub.add_parser("export", help="write SRC (HF or Orbax) as an HF checkpoint dir")
    exp.add_argument("src")
    exp.add_argument("out_dir")
    exp.add_argument(
        "--dtype", default=None, choices=["bfloat16", "float32", "float16"],
        help="weights dtype to write (default: the source's own dtype)",
    )  # fmt: skip
    exp.add_argument("--source-dir", default=None, help="copy tokenizer/processor/generation files from here")
    exp.add_argument("--step", type=int, default=None, help="Orbax CheckpointManager step (default: latest)")
    exp.add_argument("--max-shard-bytes", type=int, default=2**30)
    args = parser.parse_args(argv)

    if args.command == "check":
        from vinci_jax.hf.check import check

        result = check(args.dir, tolerance=args.tolerance, seed=args.seed)
        print(json.dumps(result))
        if not result["ok"]:
            print(
                f"FAIL: max abs logit difference {result['max_abs_diff']:.3g} > tolerance {args.tolerance:g}",
                file=sys.stderr,
            )
            return 1
        return 0

    from vinci_jax.hf.export import export

    out = export(
        args.src, args.out_dir, dtype=args.dtype, source_dir=args.source_dir, step=args.step,
        max_shard_bytes=args.max_shard_bytes,
    )  # fmt: skip
    print(json.dumps({"exported": str(out), "src": args.src, "dtype": args.dtype or "source"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
