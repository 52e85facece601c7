"""Benchmark: the pool vs a reference-style path vs the warm floor, per language, on the same corpus and machine.

  python -m renderers.bench [--workers N] [--scale K] [--languages python,svg,html,latex]

reference-style = what the released reward does: a fresh `python` per chart, a fresh Chromium per page, plain
pdflatex + pdftoppm per document, cairosvg per SVG (run with the same parallelism as the pool, except SVG which is
an in-process call). warm floor = the same code in one already-warm process, sequential, no sandbox, no pool.
The last line is a JSON object with a `speedup` map: pool renders/s over reference-style renders/s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from renderers.bench_corpus import corpus
from renderers.pool import RenderPool
from renderers.types import RenderJob

PY_HARNESS = (
    "import sys, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "code = open(sys.argv[1]).read()\nexec(compile(code, 'job', 'exec'), {'__name__': '__main__'})\n"
    "if plt.get_fignums():\n    plt.savefig(sys.argv[2])\n"
)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------ reference-style paths
def reference_python(codes: list[str], workers: int, scratch: str) -> float:
    def one(i_code: tuple[int, str]) -> None:
        i, code = i_code
        src, out = os.path.join(scratch, f"ref{i}.py"), os.path.join(scratch, f"ref{i}.png")
        with open(src, "w") as f:
            f.write(code)
        subprocess.run([sys.executable, "-c", PY_HARNESS, src, out], cwd=scratch, capture_output=True, timeout=60)

    with ThreadPoolExecutor(workers) as ex:
        return timed(lambda: list(ex.map(one, enumerate(codes))))


def reference_html(codes: list[str], workers: int) -> float:
    from renderers.lang_html import CHROMIUM, CHROMIUM_FLAGS

    def one(code: str) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_content(code, wait_until="load", timeout=6000)
            page.screenshot(full_page=True, animations="disabled")
            browser.close()

    with ThreadPoolExecutor(workers) as ex:
        return timed(lambda: list(ex.map(one, codes)))


def _plain_latex(code: str, workdir: str) -> None:
    """The released reward's path: pdflatex on the prepared document, then pdftoppm -png at 300 dpi."""
    from renderers.lang_latex import PDFLATEX_FLAGS, prepare_document

    with open(os.path.join(workdir, "doc.tex"), "w") as f:
        f.write(prepare_document(code).tex)
    subprocess.run(["pdflatex", *PDFLATEX_FLAGS, "doc.tex"], cwd=workdir, capture_output=True, timeout=60)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "300", "-f", "1", "-l", "1", "-singlefile", "doc.pdf", "page"],
        cwd=workdir,
        capture_output=True,
        timeout=60,
    )


def reference_latex(codes: list[str], workers: int, scratch: str) -> float:
    def one(i_code: tuple[int, str]) -> None:
        workdir = tempfile.mkdtemp(prefix=f"tex{i_code[0]}-", dir=scratch)
        _plain_latex(i_code[1], workdir)

    with ThreadPoolExecutor(workers) as ex:
        return timed(lambda: list(ex.map(one, enumerate(codes))))


def reference_svg(codes: list[str]) -> float:
    import cairosvg

    return timed(
        lambda: [
            cairosvg.svg2png(bytestring=c.encode(), output_width=336, output_height=336, background_color="white")
            for c in codes
        ]
    )


# ------------------------------------------------------------------ warm floors
def floor_python(codes: list[str], scratch: str) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cwd = os.getcwd()
    os.chdir(scratch)

    def one(code: str) -> None:
        exec(compile(code, "job", "exec"), {"__name__": "__main__"})
        if plt.get_fignums():
            plt.savefig(io.BytesIO(), format="png")
        plt.close("all")

    try:
        one(codes[0])  # warm
        return timed(lambda: [one(c) for c in codes])
    finally:
        os.chdir(cwd)


def floor_html(codes: list[str]) -> float:
    from playwright.sync_api import sync_playwright

    from renderers.lang_html import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        page = browser.new_page(viewport={"width": 1280, "height": 720})

        def one(code: str) -> None:
            page.set_content(code, wait_until="load", timeout=6000)
            page.screenshot(full_page=True, animations="disabled")

        one(codes[0])
        seconds = timed(lambda: [one(c) for c in codes])
        browser.close()
    return seconds


def floor_latex(codes: list[str], scratch: str) -> float:
    """The pool's latex code path (formats, guard, streamed raster) called directly: no worker, no job uid."""
    from renderers.images import DEFAULT_MAX_PIXELS
    from renderers.lang_latex import build_formats, render_latex
    from renderers.sandbox import Limits

    format_dir = os.path.join(scratch, "formats")
    if not os.path.isdir(format_dir):
        build_formats(format_dir)
    workdir = os.path.join(scratch, "floor-tex")
    os.makedirs(workdir, exist_ok=True)

    def one(code: str) -> None:
        render_latex(code, {}, workdir, Limits(), None, 60.0, format_dir, DEFAULT_MAX_PIXELS)

    one(codes[0])
    return timed(lambda: [one(c) for c in codes])


def latex_breakdown(codes: list[str], scratch: str) -> dict[str, float]:
    """Mean ms per document of each stage, sequential and warm: the reference path (plain pdflatex + pdftoppm PNG)
    against the pool's (pdflatex with an inflated format, in-process page guard, one cropped pdftoppm streaming PPM,
    PNG encoded in the worker); the pdfinfo guard the pool used to run is timed for comparison. Spawn costs are
    those of this (light) process, not of a worker holding the python stack."""
    from renderers.lang_latex import PDFLATEX_FLAGS, PNG_LEVEL, build_formats, largest_mediabox_pts, prepare_document
    from renderers.ppm_png import PpmToPng

    format_dir = os.path.join(scratch, "formats")
    if not os.path.isdir(format_dir):
        build_formats(format_dir)
    workdir = tempfile.mkdtemp(prefix="stages-", dir=scratch)
    env = dict(os.environ, TEXFORMATS=format_dir + ":")
    totals: dict[str, float] = {}

    def add(stage: str, seconds: float) -> None:
        totals[stage] = totals.get(stage, 0.0) + seconds

    def run(stage: str, argv: list[str]) -> bytes:
        start = time.perf_counter()
        out = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, timeout=60).stdout
        add(stage, time.perf_counter() - start)
        return out

    pdf = os.path.join(workdir, "doc.pdf")
    raster = ["pdftoppm", "-r", "300", "-f", "1", "-l", "1", "-singlefile"]
    for code in codes:
        doc = prepare_document(code)
        with open(os.path.join(workdir, "doc.tex"), "w") as f:
            f.write(doc.tex)
        run("reference_pdflatex", ["pdflatex", *PDFLATEX_FLAGS, "doc.tex"])
        run("reference_pdftoppm_png", [*raster, "-png", "doc.pdf", "page"])
        if doc.format:
            with open(os.path.join(workdir, "doc.tex"), "w") as f:
                f.write(doc.tex_for_format or doc.tex)
        run("pool_pdflatex", ["pdflatex", *PDFLATEX_FLAGS, *([f"-fmt={doc.format}"] if doc.format else []), "doc.tex"])
        run("old_guard_pdfinfo", ["pdfinfo", "-f", "1", "-l", "1", "doc.pdf"])
        with open(pdf, "rb") as f:
            data = f.read()
        add("pool_guard_inprocess", timed(lambda data=data: largest_mediabox_pts(data)))
        ppm = run("pool_pdftoppm_ppm_crop", [*raster, "-x", "0", "-y", "0", "-W", "9110", "-H", "9110", "doc.pdf"])

        def encode(ppm: bytes = ppm) -> None:
            encoder = PpmToPng(PNG_LEVEL)
            encoder.feed(ppm)
            encoder.finish()

        add("pool_png_encode", timed(encode))
    return {stage: round(1000 * seconds / len(codes), 2) for stage, seconds in totals.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m renderers.bench", description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="pool workers and reference parallelism (CPUs)")
    parser.add_argument("--scale", type=int, default=1, help="corpus multiplier (1 is ~2-3 minutes on 2 cores)")
    parser.add_argument("--languages", default="python,svg,html,latex")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per language; the best of each path counts")
    args = parser.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    languages = [lang for lang in args.languages.split(",") if lang]
    codes = {lang: items for lang, items in corpus(args.scale).items() if lang in languages}
    scratch = tempfile.mkdtemp(prefix="renderers-bench-")
    ok: dict[str, int] = {}
    reference_s = {
        "python": lambda c: reference_python(c, workers, scratch),
        "html": lambda c: reference_html(c, workers),
        "latex": lambda c: reference_latex(c, workers, scratch),
        "svg": reference_svg,
    }
    floor_s = {
        "python": lambda c: floor_python(c, scratch),
        "html": floor_html,
        "latex": lambda c: floor_latex(c, scratch),
        "svg": reference_svg,
    }
    report: dict[str, dict[str, float]] = {"pool_rps": {}, "reference_rps": {}, "floor_rps": {}}
    breakdown: dict[str, float] = {}
    load_before = os.getloadavg()
    try:
        start = time.perf_counter()
        with RenderPool(num_workers=workers, languages=languages) as pool:
            startup = time.perf_counter() - start
            # Per language, the three paths run back to back (best of --repeats rounds), so a load spike from
            # other tenants of the machine hits all three alike rather than one of them.
            for lang, items in codes.items():
                best = {"pool_rps": 0.0, "reference_rps": 0.0, "floor_rps": 0.0}
                for _ in range(args.repeats):
                    jobs = [RenderJob(code, lang) for code in items]
                    begin = time.perf_counter()
                    results = pool.render_batch(jobs)
                    best["pool_rps"] = max(best["pool_rps"], rate(len(items), time.perf_counter() - begin))
                    ok[lang] = sum(r.ok for r in results)
                    best["reference_rps"] = max(best["reference_rps"], rate(len(items), reference_s[lang](items)))
                    best["floor_rps"] = max(best["floor_rps"], rate(len(items), floor_s[lang](items)))
                for key, value in best.items():
                    report[key][lang] = value
        if "latex" in codes:
            breakdown = latex_breakdown(codes["latex"], scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    speedup = {lang: report["pool_rps"][lang] / report["reference_rps"][lang] for lang in codes}
    vs_floor = {lang: report["pool_rps"][lang] / report["floor_rps"][lang] for lang in codes}
    for lang in codes:
        print(
            f"{lang:7s} n={len(codes[lang]):3d} ok={ok[lang]:3d}  pool {report['pool_rps'][lang]:7.2f}/s  "
            f"reference-style {report['reference_rps'][lang]:7.2f}/s  speedup {speedup[lang]:6.2f}x  "
            f"warm floor {report['floor_rps'][lang]:7.2f}/s  pool/floor {vs_floor[lang]:.2f}",
            file=sys.stderr,
        )
    summary = {
        "workers": workers,
        "cpus": os.cpu_count(),
        "pool_startup_s": round(startup, 2),
        "corpus": {lang: len(items) for lang, items in codes.items()},
        "rendered_ok": ok,
        **{key: {k: round(v, 3) for k, v in value.items()} for key, value in report.items()},
        "speedup": {k: round(v, 2) for k, v in speedup.items()},
        "pool_vs_floor": {k: round(v, 2) for k, v in vs_floor.items()},
        "latex_breakdown_ms": breakdown,
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
