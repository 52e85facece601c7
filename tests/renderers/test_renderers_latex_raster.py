"""LaTeX page 1 -> PNG with one poppler call: the page-size guard reads the PDF in-process and pdftoppm rasterises
at most a budget-sized crop; what the guard says must never be smaller than the page poppler draws."""

from __future__ import annotations

import io
import subprocess
import zlib

from PIL import Image

from renderers import RenderJob
from renderers.lang_latex import largest_mediabox_pts

SLOW_OK = {"timeout_s": 30.0}


def standalone(body: str, preamble: str = "") -> str:
    return f"\\documentclass{{standalone}}\n{preamble}\\begin{{document}}\n{body}\n\\end{{document}}\n"


def test_huge_page_is_refused_before_rasterising(pool):
    result = pool.submit(RenderJob(standalone(r"\rule{100in}{100in}"), "latex", SLOW_OK)).result()
    assert result.status == "error" and "over the" in result.error and "budget" in result.error, result.error
    assert result.seconds < 5.0  # no 83-megapixel raster was made first


def test_long_thin_page_within_budget_is_rendered_whole(pool):
    result = pool.submit(RenderJob(standalone(r"\rule{40in}{0.3in}"), "latex", SLOW_OK)).result()
    assert result.ok, result.error
    width, height = result.image().size
    assert width >= 40 * 300 and height < 200  # wider than the 9110 px crop side: not cut


def test_guard_matches_pdfinfo_on_real_pdflatex_output(tmp_path):
    for i, body in enumerate([r"\rule{2in}{1in}", r"\begin{tabular}{cc}a&b\\c&d\end{tabular}"]):
        (tmp_path / f"d{i}.tex").write_text(standalone(body))
        subprocess.run(["pdflatex", "-interaction=nonstopmode", f"d{i}.tex"], cwd=tmp_path, capture_output=True)
        info = subprocess.run(["pdfinfo", f"d{i}.pdf"], cwd=tmp_path, capture_output=True, text=True).stdout
        line = next(x for x in info.splitlines() if x.startswith("Page size:"))
        expected = tuple(float(v) for v in line.split()[2:5:2])
        assert largest_mediabox_pts((tmp_path / f"d{i}.pdf").read_bytes()) == expected


def test_a_forged_small_box_cannot_hide_the_real_page(tmp_path):
    forged = standalone(r"\immediate\pdfobj{<< /Type /Page /MediaBox [0 0 1 1] >>}\rule{5in}{3in}")
    (tmp_path / "f.tex").write_text(forged)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "f.tex"], cwd=tmp_path, capture_output=True)
    assert largest_mediabox_pts((tmp_path / "f.pdf").read_bytes()) == (360.0, 216.0)
    stream = zlib.compress(b"<< /Type /Page /UserUnit 1000 >>")
    tricky = b"%PDF-1.5\n1 0 obj << /Type /ObjStm /N 1 /First 4 >> stream\n" + stream + b"\nendstream endobj\n"
    assert largest_mediabox_pts(tricky) is None  # scaled user space: pdfinfo decides


def test_snippet_raster_matches_plain_pdftoppm(pool, tmp_path):
    snippet = r"\begin{tikzpicture}\draw[thick,blue] (0,0) circle (1) node {$\int_0^1 x\,dx$};\end{tikzpicture}"
    result = pool.submit(RenderJob(snippet, "latex", SLOW_OK)).result()
    assert result.ok, result.error
    from renderers.lang_latex import prepare_document

    (tmp_path / "doc.tex").write_text(prepare_document(snippet).tex)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, capture_output=True)
    subprocess.run(["pdftoppm", "-png", "-r", "300", "-f", "1", "-l", "1", "-singlefile", "doc.pdf", "ref"],
                   cwd=tmp_path, capture_output=True)  # fmt: skip
    ours = result.image()
    with Image.open(io.BytesIO((tmp_path / "ref.png").read_bytes())) as ref:
        assert ours.size == ref.size and ours.tobytes() == ref.convert("RGB").tobytes()


def test_formats_are_stored_inflated_and_still_load(pool, tmp_path):
    """pdfTeX reads a plain (inflated) format as it reads its own gzip one; a format it could not load would only
    show as the slow no-format fallback, so the compile here must name the preloaded format."""
    from renderers.lang_latex import SNIPPET_FORMAT, STANDALONE_FORMAT, prepare_document, tex_env

    assert pool.formats == {SNIPPET_FORMAT: True, STANDALONE_FORMAT: True}
    code = r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}"
    (tmp_path / "doc.tex").write_text(prepare_document(code).tex_for_format)
    for name in (SNIPPET_FORMAT, STANDALONE_FORMAT):
        with open(f"{pool.format_dir}/{name}.fmt", "rb") as f:
            assert f.read(2) != b"\x1f\x8b"  # not gzip
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", f"-fmt={SNIPPET_FORMAT}", "doc.tex"],
        cwd=tmp_path,
        env=tex_env(str(tmp_path), pool.format_dir),
        capture_output=True,
    )
    assert done.returncode == 0, done.stdout[-500:]
    assert f"preloaded format={SNIPPET_FORMAT}" in (tmp_path / "doc.log").read_text(errors="replace")
