"""Command line: render one file, or a JSONL manifest of jobs, through the sandboxed pool."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from renderers.pool import RenderPool, render_one
from renderers.types import RenderJob


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("width", "height", "dpi", "viewport_width", "viewport_height", "timeout_s"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def cmd_render(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as f:
            code = f.read()
    except OSError as err:
        print(f"error: cannot read {args.file}: {err}", file=sys.stderr)
        return 2
    result = render_one(RenderJob(code=code, language=args.lang, options=_options(args), id=args.file))
    if not result.ok:
        print(f"error: {args.file} ({args.lang}): {result.status}: {result.error}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(result.png or b"")
    if result.blank:
        print(f"warning: {args.file} rendered a blank (single-colour) picture", file=sys.stderr)
    return 0


def _read_manifest(path: str) -> list[RenderJob]:
    jobs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                job_id = str(row["id"])
                jobs.append(
                    RenderJob(code=row["code"], language=row["lang"], options=row.get("options") or {}, id=job_id)
                )
            except (ValueError, KeyError, TypeError) as err:
                raise SystemExit(
                    f"error: {path} line {number}: need a JSON object with id, lang, code ({err})"
                ) from err
            if os.sep in job_id or job_id in ("", ".", ".."):
                raise SystemExit(f"error: {path} line {number}: id {job_id!r} cannot be used as a file name")
    return jobs


def cmd_render_batch(args: argparse.Namespace) -> int:
    jobs = _read_manifest(args.manifest)
    os.makedirs(args.out, exist_ok=True)
    languages = sorted({job.language for job in jobs})
    with RenderPool(num_workers=args.workers, languages=languages, timeout_s=args.timeout_s or 10.0) as pool:
        results = pool.render_batch(jobs)
    failures = 0
    with open(os.path.join(args.out, "results.jsonl"), "w", encoding="utf-8") as out:
        for job, result in zip(jobs, results, strict=True):
            if result.ok:
                with open(os.path.join(args.out, f"{job.id}.png"), "wb") as f:
                    f.write(result.png or b"")
            else:
                failures += 1
            row = {"id": job.id, "status": result.status, "error": result.error, "seconds": round(result.seconds, 4)}
            if result.blank:
                row["blank"] = True
            out.write(json.dumps(row) + "\n")
    print(f"rendered {len(jobs) - failures}/{len(jobs)} jobs into {args.out}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Start a pool and render one known-good job per language; exit 1 naming the cause when any fails."""
    from renderers.types import RenderInfraError

    languages = [lang for lang in args.languages.split(",") if lang]
    try:
        with RenderPool(num_workers=1, languages=languages, timeout_s=30.0) as pool:
            results = pool.self_check(languages)
            capabilities = pool.capabilities
    except RenderInfraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for lang, result in results.items():
        print(f"{lang}: ok ({result.seconds:.2f} s)")
    print(f"sandbox: {', '.join(k for k, v in sorted(capabilities.items()) if v) or 'none'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m renderers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render one file to a PNG")
    render.add_argument("file")
    render.add_argument("--lang", required=True, help="python | svg | html | latex")
    render.add_argument("-o", "--output", required=True)
    batch = sub.add_parser("render-batch", help="render a JSONL manifest of {id, lang, code[, options]}")
    batch.add_argument("manifest")
    batch.add_argument("--out", required=True)
    batch.add_argument("--workers", type=int, default=None)
    check = sub.add_parser("check", help="self-check: one known-good job per language; exit 1 with the cause")
    check.add_argument("--languages", default="python,svg,html,latex")
    for p in (render, batch):
        p.add_argument("--timeout-s", dest="timeout_s", type=float, default=None)
    for name in ("width", "height", "dpi", "viewport-width", "viewport-height"):
        render.add_argument(f"--{name}", dest=name.replace("-", "_"), type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        return cmd_render(args)
    if args.command == "check":
        return cmd_check(args)
    return cmd_render_batch(args)
