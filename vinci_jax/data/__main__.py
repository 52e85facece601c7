"""CLI over `vinci_data` (kept thin: argument parsing and printing only).

python -m vinci_jax.data build-synth --out DIR --size N --seed S [--domains chart svg ...] [--workers W]
python -m vinci_jax.data convert A.parquet [B.parquet ...] --out DIR [--layout auto|vinci_sft|messages|easyr1]
python -m vinci_jax.data tfds DIR --out TFDS_DIR [--configs chart-generate ...]   (TFDS dataset over converted shards)
python -m vinci_jax.data inspect DIR [--split train] [--count 12] [--sheet PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from vinci_data.layouts import LAYOUTS
    from vinci_data.synth import DOMAIN_REGISTRY

    parser = argparse.ArgumentParser(prog="python -m vinci_jax.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-synth", help="render the seeded five-domain synthetic corpus into shards")
    build.add_argument("--out", required=True)
    build.add_argument("--size", type=int, required=True)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--domains", nargs="+", default=list(DOMAIN_REGISTRY), choices=sorted(DOMAIN_REGISTRY))
    build.add_argument("--refine-fraction", type=float, default=0.3)
    build.add_argument("--workers", type=int, default=None, help="render worker processes (default: CPU count)")
    build.add_argument("--shards", type=int, default=1, help="ArrayRecord shards per split")

    convert = sub.add_parser(
        "convert", help="published VinciCoder parquet -> ArrayRecord shards + stats.json (layout per file)"
    )
    convert.add_argument("inputs", nargs="*", metavar="PARQUET", help="files of any known layout (detected)")
    convert.add_argument("--sft", nargs="+", metavar="PARQUET", default=[], help="files that must be SFT layouts")
    convert.add_argument("--rl", nargs="+", metavar="PARQUET", default=[], help="files that must be RL (EasyR1)")
    convert.add_argument("--out", required=True, help="output dir (local or gs://bucket/prefix)")
    convert.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="override the detection")
    convert.add_argument("--rows-per-shard", type=int, default=20_000, help="rows per unit of work and shard")
    convert.add_argument("--val-fraction", type=float, default=0.0)
    convert.add_argument("--test-fraction", type=float, default=0.0, help="rows for the held-out `test` split")
    convert.add_argument(
        "--max-skip-fraction", "--max_skip_fraction", dest="max_skip_fraction", type=float, default=0.2,
        help="fail (exit 1) when a file skips more than this fraction of its rows",
    )  # fmt: skip
    convert.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    convert.add_argument("--no-dedupe", action="store_true")

    tfds_cmd = sub.add_parser("tfds", help="build the TFDS dataset (configs per domain and task) over shards")
    tfds_cmd.add_argument("src", help="a dataset dir written by build-synth or convert")
    tfds_cmd.add_argument("--out", required=True, help="TFDS data_dir")
    tfds_cmd.add_argument("--configs", nargs="+", default=None, help="config names (default: all with records)")

    inspect = sub.add_parser("inspect", help="print samples and write a contact sheet PNG")
    inspect.add_argument("dir")
    inspect.add_argument("--split", default="train")
    inspect.add_argument("--count", type=int, default=12)
    inspect.add_argument("--sheet", default=None, help="contact sheet path (default DIR/contact_sheet_<split>.png)")
    return parser


def _summary(stats: dict) -> dict:
    keep = ("kind", "layouts", "written", "rows", "skipped_total", "duplicates_total", "domain", "task", "split",
            "skipped")
    return {k: stats[k] for k in keep if k in stats}


def _convert(args: argparse.Namespace) -> int:
    from vinci_data.convert import ConvertError, convert
    from vinci_data.layouts import LayoutError

    groups = [(None, args.inputs), ("sft", args.sft), ("rl", args.rl)]
    used = [(kind, files) for kind, files in groups if files]
    if len(used) != 1:
        print("error: pass the parquet files either positionally, or after --sft, or after --rl", file=sys.stderr)
        return 2
    kind, inputs = used[0]
    start = time.perf_counter()
    try:
        stats = convert(
            inputs, args.out, kind, rows_per_shard=args.rows_per_shard, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, dedupe=not args.no_dedupe, layout=args.layout,
            max_skip_fraction=args.max_skip_fraction, workers=args.workers,
        )  # fmt: skip
    except (LayoutError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConvertError as e:
        print(json.dumps({**_summary(e.stats), "errors": e.stats.get("errors"), "out": args.out}, indent=2))
        print(f"error: {e}", file=sys.stderr)
        return 1
    seconds = round(time.perf_counter() - start, 2)
    print(json.dumps({**_summary(stats), "seconds": seconds, "out": args.out}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "build-synth":
        from vinci_data.synth import SynthConfig, build_synth

        config = SynthConfig(
            size=args.size,
            seed=args.seed,
            domains=tuple(args.domains),
            refine_fraction=args.refine_fraction,
            num_shards=args.shards,
        )

        def progress(done: int, total: int) -> None:
            print(f"rendered {done}/{total}", file=sys.stderr, flush=True)

        stats = build_synth(args.out, config, num_workers=args.workers, progress=progress)
        timing = {"seconds": stats["seconds"], "render_seconds": stats["render_seconds"]}
        print(json.dumps({**_summary(stats), **timing, "out": args.out}, indent=2))
        return 0
    if args.command == "convert":
        return _convert(args)
    if args.command == "tfds":
        from vinci_data.tfds_builder import build_tfds

        built = build_tfds(args.src, args.out, configs=args.configs)
        print(json.dumps(built, indent=2))
        return 0
    if args.command == "inspect":
        from vinci_data.inspect import contact_sheet, describe, sample_records
        from vinci_data.records import read_stats

        if not os.path.isdir(args.dir):
            print(f"error: {args.dir!r} is not a directory; pass a dataset directory written by build-synth/convert")
            return 2
        if os.path.exists(os.path.join(args.dir, "stats.json")):
            print(json.dumps(_summary(read_stats(args.dir)), indent=2))
        records = sample_records(args.dir, args.split, args.count)
        for record in records:
            print(describe(record))
        if not records:
            print(f"error: no records in split {args.split!r} of {args.dir!r}")
            return 1
        sheet = contact_sheet(records, args.sheet or os.path.join(args.dir, f"contact_sheet_{args.split}.png"))
        print(f"contact sheet: {sheet}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
