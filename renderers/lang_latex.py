"""latex: TikZ / pgfplots / maths through pdflatex with pre-compiled (mylatexformat) preambles, then poppler.

Documents follow the released reward: `\\documentclass{article}` becomes `\\documentclass[tikz, border=3.14mm]
{standalone}`; a snippet without `\\documentclass` is wrapped in a standalone preview document with amsmath,
amssymb, graphicx, xcolor, tikz and pgfplots (compat 1.17). Both fixed preambles are dumped once into formats, so
a compile loads them in ~0.1 s instead of reading tikz/pgfplots again; a document whose own packages clash with a
format (e.g. `\\usepackage[dvipsnames]{xcolor}`) is compiled again without it.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from renderers import sandbox
from renderers.ppm_png import PpmError, PpmToPng
from renderers.types import InfraError

DEFAULTS = {"dpi": 300}
STANDALONE_CLASS = r"\documentclass[tikz, border=3.14mm]{standalone}"
SNIPPET_PREAMBLE = "\n".join(
    [
        r"\documentclass[preview, border=3.14mm]{standalone}",
        r"\usepackage{amsmath}",
        r"\usepackage{amssymb}",
        r"\usepackage{graphicx}",
        r"\usepackage{xcolor}",
        r"\usepackage{tikz}",
        r"\usepackage{pgfplots}",
        r"\pgfplotsset{compat=1.17}",
    ]
)
SNIPPET_FORMAT, STANDALONE_FORMAT = "vinci-snippet", "vinci-standalone"
_DOCUMENTCLASS = re.compile(r"\\documentclass\s*(\[[^\]]*\])?\s*\{([^}]*)\}")
STREAM_CHUNK_BYTES = 1 << 20
PNG_LEVEL = 1  # zlib level of the PNG the worker encodes from pdftoppm's PPM stream (see renderers.ppm_png)
PDFLATEX_FLAGS = ["-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error"]


@dataclass(frozen=True)
class PreparedDocument:
    tex: str  # the document to compile without a format
    format: str | None  # format name to try first, if any
    tex_for_format: str | None  # the document as that format expects it


def prepare_document(code: str) -> PreparedDocument:
    """Apply the reference's article->standalone switch or snippet wrapping, and pick a warm format."""
    match = _DOCUMENTCLASS.search(code)
    if match is None:
        tex = f"{SNIPPET_PREAMBLE}\n\\begin{{document}}\n{code}\n\\end{{document}}\n"
        return PreparedDocument(tex=tex, format=SNIPPET_FORMAT, tex_for_format=tex)
    if match.group(2).strip() != "article":
        return PreparedDocument(tex=code, format=None, tex_for_format=None)
    head, tail = code[: match.start()], code[match.end() :]
    tex = head + STANDALONE_CLASS + tail
    # mylatexformat skips the document up to \endofdump: the class (and tikz) come from the format.
    tex_for_format = head + STANDALONE_CLASS + "\n\\endofdump" + tail
    return PreparedDocument(tex=tex, format=STANDALONE_FORMAT, tex_for_format=tex_for_format)


def tex_env(home: str, format_dir: str | None) -> dict[str, str]:
    """Paranoid kpathsea settings: no reads/writes outside the job dir, no font or format generation."""
    extra = {
        "openin_any": "p",
        "openout_any": "p",
        "shell_escape": "f",
        "MKTEXPK": "0",
        "MKTEXTFM": "0",
        "MKTEXMF": "0",
        "MKTEXFMT": "0",
        "TEXMFVAR": home,
        "TEXMFCONFIG": home,
        "max_print_line": "10000",  # unwrapped log lines, so error messages come out whole
        "error_line": "254",
        "half_error_line": "238",
    }
    if format_dir:
        extra["TEXFORMATS"] = format_dir + ":"  # trailing ':' keeps the default search path
    return sandbox.scrubbed_env(home, extra)


def build_formats(format_dir: str, timeout_s: float = 120.0) -> dict[str, bool]:
    """Dump both fixed preambles with mylatexformat into `format_dir` (once per pool). Returns which worked."""
    os.makedirs(format_dir, exist_ok=True)
    sources = {
        SNIPPET_FORMAT: SNIPPET_PREAMBLE + "\n\\begin{document}\n\\end{document}\n",
        STANDALONE_FORMAT: STANDALONE_CLASS + "\n\\endofdump\n\\begin{document}\n\\end{document}\n",
    }
    procs = {}
    for name, source in sources.items():
        with open(os.path.join(format_dir, name + ".tex"), "w") as f:
            f.write(source)
        procs[name] = subprocess.Popen(
            [
                "pdflatex",
                "-ini",
                f"-jobname={name}",
                "-interaction=nonstopmode",
                "&pdflatex",
                "mylatexformat.ltx",
                name + ".tex",
            ],
            cwd=format_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=sandbox.scrubbed_env(format_dir, {"TEXMFVAR": format_dir}),
        )
    built = {}
    for name, proc in procs.items():
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        built[name] = os.path.exists(os.path.join(format_dir, name + ".fmt"))
        if built[name]:
            inflate_format(os.path.join(format_dir, name + ".fmt"))
    for leftover in os.listdir(format_dir):
        if not leftover.endswith(".fmt"):
            os.remove(os.path.join(format_dir, leftover))
    os.chmod(format_dir, 0o755)
    return built


def inflate_format(path: str) -> bool:
    """Store a dumped format uncompressed: pdfTeX reads formats through zlib's gzread, which passes a plain file
    through as is, and inflating the ~19 MB of a tikz/pgfplots format was a third of each compile's CPU time.
    False (file left as it was) when it is not gzip data."""
    try:
        with gzip.open(path, "rb") as src, open(path + ".raw", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error):
        if os.path.exists(path + ".raw"):
            os.remove(path + ".raw")
        return False
    os.replace(path + ".raw", path)
    return True


def _log_error(job_dir: str) -> str:
    try:
        with open(os.path.join(job_dir, "doc.log"), errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "pdflatex failed without a log"
    for i, line in enumerate(lines):
        if line.startswith("!"):
            context = next((entry.strip() for entry in lines[i + 1 : i + 12] if entry.startswith("l.")), "")
            return f"pdflatex: {line[1:].strip()} {context}".strip()[:500]
    return "pdflatex failed (no error line in the log)"


class _Tool:
    """Runs TeX/poppler tools in the job dir under limits, as the job uid, killed at the deadline."""

    def __init__(self, job_dir: str, env: dict[str, str], limits: sandbox.Limits, uid: int | None, deadline: float):
        self.job_dir, self.env, self.deadline = job_dir, env, deadline
        self.limits, self.uid = limits, uid
        self.address_space = limits.address_space_mb << 20
        self.preexec = sandbox.subprocess_preexec(limits, uid, self.address_space)

    def _spawn(self, argv: list[str], stdout: Any, stderr: Any) -> tuple[subprocess.Popen[bytes], bool]:
        """The started tool and whether it runs through the prlimit/setpriv wrappers. A tool that cannot be started
        at all is the renderer's failure (InfraError)."""
        wrapped = sandbox.tool_command(argv, self.limits, self.uid, self.address_space)
        try:
            proc = subprocess.Popen(
                wrapped or argv,
                cwd=self.job_dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=None if wrapped else self.preexec,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise InfraError(f"{argv[0]} could not be started: {type(err).__name__}: {err}") from err
        return proc, wrapped is not None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):  # the group may already be gone
            os.killpg(proc.pid, 9)

    @staticmethod
    def _check_started(argv: list[str], wrapped: bool, returncode: int, out: bytes) -> None:
        if wrapped and returncode in (126, 127) and _wrapper_failed(out):
            raise InfraError(f"{argv[0]} could not be started: {out.decode(errors='replace').strip()[:300]}")

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[bytes] | None:
        """The finished tool (stdout and stderr together in .stdout); None on timeout."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        proc, wrapped = self._spawn(argv, subprocess.PIPE, subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            return None
        self._check_started(argv, wrapped, proc.returncode, out)
        return subprocess.CompletedProcess(argv, proc.returncode, out, b"")

    def stream(self, argv: list[str], sink: Callable[[bytes], None]) -> subprocess.CompletedProcess[bytes] | None:
        """Run the tool handing its stdout to `sink` chunk by chunk as it arrives (.stdout of the result is then its
        stderr); None on timeout. A sink that raises ValueError stops the tool and re-raises."""
        if self.deadline - time.monotonic() <= 0:
            return None
        with tempfile.TemporaryFile(dir=self.job_dir) as err_file:
            proc, wrapped = self._spawn(argv, subprocess.PIPE, err_file)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            try:
                while True:
                    remaining = self.deadline - time.monotonic()
                    if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                        self._kill(proc)
                        return None
                    data = os.read(fd, STREAM_CHUNK_BYTES)
                    if not data:
                        break
                    sink(data)
            except ValueError:
                self._kill(proc)
                raise
            finally:
                proc.stdout.close()
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=max(0.1, self.deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        self._kill(proc)
                        proc.wait()
            err_file.seek(0)
            err = err_file.read(4096)
        self._check_started(argv, wrapped, proc.returncode, err)
        return subprocess.CompletedProcess(argv, proc.returncode, err, b"")


def _wrapper_failed(out: bytes) -> bool:
    """prlimit/setpriv exit 126/127 with their own message when the tool cannot be executed."""
    text = out.decode(errors="replace")
    return any(f"{name}: failed to execute" in text or f"{name}: cannot" in text for name in ("prlimit", "setpriv"))


def _page_size_pts(info: str) -> tuple[float, float] | None:
    match = re.search(r"Page(?:\s+\d+)? size:\s+([\d.]+) x ([\d.]+) pts", info)
    return (float(match.group(1)), float(match.group(2))) if match else None


def render_latex(
    code: str,
    options: Mapping[str, Any],
    job_dir: str,
    limits: sandbox.Limits,
    uid: int | None,
    timeout_s: float,
    format_dir: str | None,
    max_pixels: int,
) -> tuple[str, bytes | None, str]:
    deadline = time.monotonic() + timeout_s
    dpi = int(options.get("dpi", DEFAULTS["dpi"]))
    doc = prepare_document(code)
    tool = _Tool(job_dir, tex_env(job_dir, format_dir), limits, uid, deadline)
    attempts: list[tuple[list[str], str]] = []
    if doc.format and format_dir and os.path.exists(os.path.join(format_dir, doc.format + ".fmt")):
        attempts.append(([f"-fmt={doc.format}"], doc.tex_for_format or doc.tex))
    attempts.append(([], doc.tex))
    error = ""
    for extra_flags, tex in attempts:
        for stale in ("doc.pdf", "doc.log"):
            if os.path.exists(os.path.join(job_dir, stale)):
                os.remove(os.path.join(job_dir, stale))
        with open(os.path.join(job_dir, "doc.tex"), "w") as f:
            f.write(tex)
        done = tool.run(["pdflatex", *PDFLATEX_FLAGS, *extra_flags, "doc.tex"])
        if done is None:
            return "timeout", None, f"pdflatex exceeded the {timeout_s:g} s limit"
        if done.returncode == 0 and os.path.exists(os.path.join(job_dir, "doc.pdf")):
            break
        error = _log_error(job_dir)
    else:
        return "error", None, error
    return _rasterise(tool, job_dir, dpi, max_pixels, timeout_s)


MAX_PDF_SCAN_BYTES = 16 << 20
MAX_OBJSTM_BYTES = 1 << 20
_MEDIABOX = re.compile(rb"/MediaBox\s*\[\s*([-\d.\s]+?)\s*\]")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm\b[^>]*>>\s*stream\r?\n")


def largest_mediabox_pts(pdf: bytes) -> tuple[float, float] | None:
    """The largest /MediaBox anywhere in the file (plain text and Flate object streams), in points; None when the
    file cannot be read this way (then pdfinfo decides). The largest, so that a box the document forged itself
    (\\pdfobj, \\pdfpageattr) can only make its own page look bigger, never hide the real one."""
    if len(pdf) > MAX_PDF_SCAN_BYTES or b"/UserUnit" in pdf:
        return None
    texts = [pdf]
    for match in _OBJSTM.finditer(pdf):
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(pdf[match.end() : match.end() + MAX_PDF_SCAN_BYTES], MAX_OBJSTM_BYTES)
        except zlib.error:
            return None
        if inflater.unconsumed_tail or b"/UserUnit" in text:
            return None  # oversized object stream: not a pdfTeX page tree we can vouch for
        texts.append(text)
    best = None
    for text in texts:
        for box in _MEDIABOX.finditer(text):
            try:
                x0, y0, x1, y1 = (float(v) for v in box.group(1).split())
            except ValueError:
                return None
            size = (abs(x1 - x0), abs(y1 - y0))
            if best is None or size[0] * size[1] > best[0] * best[1]:
                best = size
    return best


def _rasterise(tool: _Tool, job_dir: str, dpi: int, max_pixels: int, timeout_s: float):
    """Page 1 to PNG with one poppler call: the page-size guard reads the PDF's page boxes in-process (pdfinfo only
    when it cannot), and pdftoppm rasterises at most a square crop of the pixel budget, so a page the guard got
    wrong still costs no more than the budget (and is refused when it reaches the crop's edge). pdftoppm streams
    PPM on stdout and the worker encodes the PNG as it arrives (renderers.ppm_png: cheaper than libpng's)."""
    try:
        with open(os.path.join(job_dir, "doc.pdf"), "rb") as f:
            pts = largest_mediabox_pts(f.read(MAX_PDF_SCAN_BYTES + 1))
    except OSError:
        pts = None
    if pts is None:
        info = tool.run(["pdfinfo", "-f", "1", "-l", "1", "doc.pdf"])
        if info is None:
            return "timeout", None, f"pdfinfo exceeded the {timeout_s:g} s limit"
        pts = _page_size_pts(info.stdout.decode(errors="replace"))
        if pts is None:
            return "error", None, "pdflatex produced a PDF without a readable first page"
    pixels = (pts[0] / 72 * dpi) * (pts[1] / 72 * dpi)
    if pixels > max_pixels:
        return "error", None, f"page 1 at {dpi} dpi would be {pixels:.0f} px, over the {max_pixels} px budget"
    side = max(1, math.isqrt(max_pixels))
    base = ["pdftoppm", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile"]
    wide = max(pts) / 72 * dpi >= side - 2  # a long thin page within budget: no crop, its area is already checked
    crop = [] if wide else ["-x", "0", "-y", "0", "-W", str(side), "-H", str(side)]
    encoder = PpmToPng(PNG_LEVEL)
    try:
        done = tool.stream([*base, *crop, "doc.pdf"], encoder.feed)  # no output root: the PPM comes on stdout
        if done is not None and done.returncode == 0:
            png = encoder.finish()
    except PpmError as err:
        return "error", None, f"pdftoppm wrote no usable image: {err}"
    if done is None:
        return "timeout", None, f"pdftoppm exceeded the {timeout_s:g} s limit"
    if done.returncode != 0:
        return "error", None, f"pdftoppm failed: {done.stdout.decode(errors='replace').strip()[:300]}"
    size = encoder.size or (0, 0)
    if crop and (size[0] >= side or size[1] >= side):
        return "error", None, f"page 1 at {dpi} dpi is larger than its page box says (over {side} px a side)"
    return "ok", png, ""


def tools_available() -> bool:
    return all(shutil.which(tool) for tool in ("pdflatex", "pdftoppm", "pdfinfo"))
