"""A render worker process: warms up once, then renders jobs sent by the pool over stdin/stdout.

Wire format (no pickle in either direction: what comes back may be shaped by untrusted code):
  pool -> worker: one JSON line {"seq", "language", "code", "options", "timeout_s"} or {"cmd": "quit"}
  worker -> pool: one JSON line {"seq", "status", "error", "seconds", "blank", "png_len"} then png_len bytes;
                  first of all a {"ready": true, ...} line once warm.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from typing import Any

from renderers import sandbox
from renderers.images import DEFAULT_MAX_PIXELS, ImageRejected, check_png
from renderers.types import INFRA, InfraError


class Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.slot = int(config["slot"])
        self.languages = tuple(config["languages"])
        self.limits = sandbox.Limits(**config["limits"])
        self.max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))
        self.format_dir = config.get("format_dir")
        # isolate=False (or not root): the documented fallback with rlimits, private dirs and scrubbed envs only.
        self.isolate = bool(config.get("isolate", True)) and sandbox.is_root()
        self.uid = int(config["uid"]) if self.isolate else None
        self.job_root = tempfile.mkdtemp(prefix=f"w{self.slot}-", dir=config["work_root"])
        os.chmod(self.job_root, 0o711)
        self.html = None
        self.trace: dict[str, Any] | None = None  # of the job being handled (options["trace"])
        self.isolated_network = False

    def start(self) -> dict[str, Any]:
        if self.isolate:
            # The whole worker (Chromium, TeX, cairosvg) lives in an empty network namespace, and in its own mount
            # namespace where the job dirs are a size-capped tmpfs (a job filling it gets ENOSPC, not the host).
            sandbox.isolate_worker(self.job_root, self.limits)
            self.isolated_network = True
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # our own budget (check_png) applies, from the header, before decoding
        import encodings.idna  # noqa: F401 - so a job's socket call fails on the network, not on an import

        if "python" in self.languages:
            from renderers import lang_python

            lang_python.warm_up()
        if "svg" in self.languages:
            from renderers import lang_svg

            lang_svg.warm_up()
        if "html" in self.languages:
            self._html().start()
        gc.collect()
        gc.freeze()  # forked python jobs then copy far fewer pages
        return {
            "ready": True,
            "pid": os.getpid(),
            "capabilities": {
                **sandbox.capabilities(),
                "namespaces": self.isolate,
                "separate_uid": self.isolate,
                "network_namespace": self.isolated_network,
            },
        }

    def _html(self):
        if self.html is None:
            from renderers.lang_html import HtmlRenderer

            self.html = HtmlRenderer()
        return self.html

    def _started_html(self):
        html = self._html()
        if html._browser is None:
            html.start()
        return html

    def render(self, request: dict[str, Any]) -> tuple[str, bytes | None, str]:
        language, code, options = request["language"], request["code"], request.get("options") or {}
        timeout_s = float(request["timeout_s"])
        kinds = options.get("trace")
        if kinds and language in ("python", "html"):
            kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
            return self._render_traced(language, code, options, timeout_s, kinds)
        if language == "svg":
            from renderers.lang_svg import render_svg

            return render_svg(code, options)
        if language == "html":
            return self._started_html().render(code, options, timeout_s, self.max_pixels)
        if language in ("python", "latex"):
            job_dir = sandbox.make_job_dir(self.job_root, self.uid)
            try:
                if language == "python":
                    from renderers.lang_python import render_python

                    return render_python(code, options, job_dir, self.limits, self.uid, timeout_s, self.isolate)
                from renderers.lang_latex import render_latex

                return render_latex(
                    code, options, job_dir, self.limits, self.uid, timeout_s, self.format_dir, self.max_pixels
                )
            finally:
                sandbox.remove_tree(job_dir)
        return "unsupported", None, f"language {language!r} has no renderer (supported: python, svg, html, latex)"

    def _render_traced(self, language: str, code: str, options: dict[str, Any], timeout_s: float, kinds: Any):
        """options["trace"]: the same render under renderers.trace_run instrumentation; the trace joins the header."""
        from renderers import trace_run

        if language == "html":
            html = self._started_html()
            status, png, error = html.render(code, options, timeout_s, self.max_pixels)
            self.trace = trace_run.trace_html_page(html) if status == "ok" else None
            return status, png, error
        job_dir = sandbox.make_job_dir(self.job_root, self.uid)
        try:
            status, png, error, self.trace = trace_run.trace_python(
                code, options, job_dir, self.limits, self.uid, timeout_s, tuple(kinds), self.isolate
            )
            return status, png, error
        finally:
            sandbox.remove_tree(job_dir)

    def handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        started = time.monotonic()
        self.trace = None
        max_pixels = int((request.get("options") or {}).get("max_pixels", self.max_pixels))
        try:
            status, png, error = self.render(request)
        except InfraError as err:
            status, png, error = INFRA, None, str(err)[:500]
        except Exception as err:  # noqa: BLE001 - a renderer bug must not take the worker down
            status, png, error = "error", None, f"renderer failure: {type(err).__name__}: {err}"[:500]
        blank = False
        if status == "ok":
            try:
                blank = check_png(png or b"", max_pixels)
            except ImageRejected as err:
                status, png, error = "error", None, str(err)
        header = {
            "seq": request.get("seq"),
            "status": status,
            "error": error,
            "seconds": time.monotonic() - started,
            "blank": blank,
            "png_len": len(png) if status == "ok" and png else 0,
        }
        if self.trace is not None:
            header["trace"] = self.trace
        return header, (png if status == "ok" and png else b"")

    def close(self) -> None:
        if self.html is not None:
            self.html.close()
        sandbox.remove_tree(self.job_root)


def _send(out: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    out.write(json.dumps(header).encode() + b"\n" + payload)
    out.flush()


def main() -> None:
    config = json.loads(sys.argv[1])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints (libraries, warnings) must never corrupt the result channel
    worker = Worker(config)
    try:
        try:
            ready = worker.start()
        except BaseException as err:  # the pool reports this cause (Chromium missing, ...) instead of a dead pipe
            _send(stdout, {"ready": False, "error": f"{type(err).__name__}: {err}"[:1000]})
            raise
        _send(stdout, ready)
        for line in stdin:
            request = json.loads(line)
            if request.get("cmd") == "quit":
                break
            header, payload = worker.handle(request)
            _send(stdout, header, payload)
    finally:
        worker.close()


if __name__ == "__main__":
    main()
