"""Traced renders: run a job in the renderers sandbox and also return what it drew (texts, layout, molecules, ...).

Evaluation metrics (ChartMimic low-level F1, Plot2Code text-match, Design2Code blocks, drawn molecules) need more
than the picture. A `TracePool` owns pre-warmed trace worker processes (`python -m renderers.trace_run`); each job
runs exactly as a `RenderPool` python/html job does (same fork, namespaces, unprivileged uid, rlimits, capture
rules; see lang_python / lang_html), with instrumentation installed first:
- python + "matplotlib": renderers.trace_matplotlib (texts drawn, subplot grid specs, plotting calls, colours);
- python + "rdkit": renderers.trace_rdkit (molecules drawn / parsed);
- html + "html": renderers.trace_html (Design2Code's text blocks: recoloured screenshots of the loaded page).
The sandboxed job child writes its trace as JSON into its private job dir; the worker reads it back (size-capped)
after the child has exited. Wire format as renderers.worker: one JSON line in, one JSON header line + PNG bytes out.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from renderers import sandbox
from renderers.images import DEFAULT_MAX_PIXELS, ImageRejected, check_png
from renderers.pool import _POOL_COUNTER
from renderers.types import RenderResult

TRACE_KINDS = {"python": ("matplotlib", "rdkit"), "html": ("html",)}
TRACE_FILE = ".vinci_trace.json"
MAX_TRACE_BYTES = 8 << 20
TRACE_UID_BLOCKS = (getattr(sandbox, "POOL_UID_BASE", sandbox.JOB_UID_BASE + 65_536) - sandbox.JOB_UID_BASE) // (
    sandbox.UIDS_PER_POOL
)
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class TraceResult(RenderResult):
    """A RenderResult plus the trace (None when the job failed before writing one)."""

    trace: dict[str, Any] | None = field(default=None)


# ---------------------------------------------------------------------------------------------- inside the worker


def _traced_run_job_code(code: str, job_dir: str, *, kinds: tuple[str, ...], original: Any) -> Any:
    """Runs in the sandboxed job child: install tracers, run the job as the renderer does, dump the trace."""
    tracers = {}
    if "matplotlib" in kinds:
        from renderers import trace_matplotlib

        trace_matplotlib.install()
        tracers["matplotlib"] = trace_matplotlib
        from renderers import lang_python

        install_hooks = lang_python._install_hooks

        def hooks_then_freeze_point(capture: Any) -> None:  # this forked job child only
            install_hooks(capture)
            trace_matplotlib.wrap_capture_calls()

        lang_python._install_hooks = hooks_then_freeze_point
    if "rdkit" in kinds:
        from renderers import trace_rdkit

        trace_rdkit.install()
        tracers["rdkit"] = trace_rdkit
    result = original(code, job_dir)
    trace = {}
    for name, module in tracers.items():
        try:
            trace[name] = module.collect()
        except Exception as err:  # noqa: BLE001 - a broken figure yields no trace, not a lost render
            trace[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
    path = os.path.join(job_dir, TRACE_FILE)
    with open(path, "w") as f:
        json.dump(trace, f)
    return result


def _read_trace(job_dir: str) -> dict[str, Any] | None:
    path = os.path.join(job_dir, TRACE_FILE)
    try:
        if os.path.islink(path) or os.path.getsize(path) > MAX_TRACE_BYTES:
            return None
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# Imported by the worker before it forks a traced job: the job drops privileges and may no longer be able to read
# the interpreter's files (e.g. a Python installed under a private home), so late imports inside it could fail.
TRACER_MODULES = {
    "matplotlib": ("renderers.trace_matplotlib", "matplotlib.backends.backend_pdf", "matplotlib.projections.polar",
                   "mpl_toolkits.mplot3d", "matplotlib_venn", "squarify", "networkx"),
    "rdkit": ("renderers.trace_rdkit",),
}  # fmt: skip
_PRELOADED: set[str] = set()


def preload_tracers(kinds: Sequence[str]) -> None:
    """Import what the tracers of `kinds` use, once per worker process (missing optional packages are skipped)."""
    import importlib

    for kind in kinds:
        if kind in _PRELOADED:
            continue
        _PRELOADED.add(kind)
        for module in TRACER_MODULES.get(kind, ()):
            try:
                importlib.import_module(module)
            except ImportError:
                pass


def trace_python(
    code: str,
    options: Mapping[str, Any],
    job_dir: str,
    limits: sandbox.Limits,
    uid: int | None,
    timeout_s: float,
    kinds: Sequence[str],
    namespaces: bool | None = None,
) -> tuple[str, bytes | None, str, dict[str, Any] | None]:
    """lang_python.render_python with tracers installed in the sandboxed job child; + the trace it wrote."""
    from renderers import lang_python

    preload_tracers(kinds)
    original = lang_python.run_job_code
    try:  # the forked job child looks run_job_code up in lang_python, so it runs the traced version
        lang_python.run_job_code = functools.partial(_traced_run_job_code, kinds=tuple(kinds), original=original)
        kwargs = {} if namespaces is None else {"namespaces": namespaces}
        status, png, error = lang_python.render_python(code, options, job_dir, limits, uid, timeout_s, **kwargs)
        return status, png, error, _read_trace(job_dir)
    finally:
        lang_python.run_job_code = original


def trace_html_page(renderer: Any) -> dict[str, Any] | None:
    """Design2Code text blocks of the page an HtmlRenderer has just rendered (renderers.trace_html; None when it
    holds no page)."""
    page = getattr(renderer, "_page", None)
    if page is None:
        return None
    try:
        from renderers.trace_html import page_blocks

        return {"html": page_blocks(page)}
    except Exception as err:  # noqa: BLE001 - the picture stands even if the page cannot be read
        return {"html": {"error": f"{type(err).__name__}: {err}"[:300]}}


class TraceWorker:
    """The worker side: sandboxed python jobs with tracers, Chromium pages read for their text blocks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.slot = int(config["slot"])
        self.limits = sandbox.Limits(**config["limits"])
        self.max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))
        self.uid = int(config["uid"]) if sandbox.is_root() else None
        self.job_root = tempfile.mkdtemp(prefix=f"t{self.slot}-", dir=config["work_root"])
        os.chmod(self.job_root, 0o711)
        self.html = None

    def start(self) -> dict[str, Any]:
        if sandbox.is_root():
            sandbox.isolate_worker(self.job_root, self.limits)
        from renderers import lang_python

        lang_python.warm_up()
        return {"ready": True, "pid": os.getpid(), "capabilities": sandbox.capabilities()}

    def render(self, request: dict[str, Any]) -> tuple[str, bytes | None, str, dict[str, Any] | None]:
        language, code = request["language"], request["code"]
        options = request.get("options") or {}
        timeout_s = float(request["timeout_s"])
        kinds = tuple(k for k in request.get("trace", ()) if k in TRACE_KINDS.get(language, ()))
        if language == "python":
            job_dir = sandbox.make_job_dir(self.job_root, self.uid)
            try:
                return trace_python(code, options, job_dir, self.limits, self.uid, timeout_s, kinds)
            finally:
                sandbox.remove_tree(job_dir)
        if language == "html":
            if self.html is None:
                from renderers.lang_html import HtmlRenderer

                self.html = HtmlRenderer()
                self.html.start()
            status, png, error = self.html.render(code, options, timeout_s, self.max_pixels)
            trace = trace_html_page(self.html) if status == "ok" and "html" in kinds else None
            return status, png, error, trace
        return "unsupported", None, f"traced renders support python and html, not {language!r}", None

    def handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        started = time.monotonic()
        try:
            status, png, error, trace = self.render(request)
        except Exception as err:  # noqa: BLE001 - a tracer bug must not take the worker down
            error = f"trace renderer failure: {type(err).__name__}: {err}"[:500]
            status, png, trace = "error", None, None
        blank = False
        if status == "ok":
            try:
                blank = check_png(png or b"", self.max_pixels)
            except ImageRejected as err:
                status, png, error = "error", None, str(err)
        header = {
            "status": status,
            "error": error,
            "seconds": time.monotonic() - started,
            "blank": blank,
            "trace": trace,
            "png_len": len(png) if status == "ok" and png else 0,
        }
        return header, (png if status == "ok" and png else b"")

    def close(self) -> None:
        if self.html is not None:
            self.html.close()
        sandbox.remove_tree(self.job_root)


def main() -> None:
    config = json.loads(sys.argv[1])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # library prints must never corrupt the result channel
    worker = TraceWorker(config)
    try:
        _send(stdout, worker.start())
        for line in stdin:
            request = json.loads(line)
            if request.get("cmd") == "quit":
                break
            _send(stdout, *worker.handle(request))
    finally:
        worker.close()


def _send(out: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    out.write(json.dumps(header).encode() + b"\n" + payload)
    out.flush()


# ---------------------------------------------------------------------------------------------- the caller's side


class _TraceProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        # A private HOME per worker: Chromium and its crashpad handlers (which leave the process tree) name it on
        # their command lines, which is how sweep() finds them.
        self.home = tempfile.mkdtemp(prefix=f"h{config['slot']}-", dir=config["work_root"])
        env = sandbox.scrubbed_env(self.home, {"PYTHONPATH": _PACKAGE_PARENT, "PYTHONDONTWRITEBYTECODE": "1"})
        self.log = open(os.path.join(config["work_root"], f"trace-{config['slot']}.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "renderers.trace_run", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=config["work_root"],
            start_new_session=True,
        )
        self.buffer = b""

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
        if not chunk:
            raise RuntimeError("trace worker closed its pipe")
        self.buffer += chunk

    def read(self, deadline: float) -> tuple[dict[str, Any], bytes]:
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\n", 1)
        header = json.loads(line)
        n = int(header.get("png_len", 0))
        while len(self.buffer) < n:
            self._fill(deadline)
        payload, self.buffer = self.buffer[:n], self.buffer[n:]
        return header, payload

    def send(self, message: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            import psutil

            family = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:  # noqa: BLE001
            family = []
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for child in family:
            try:
                child.kill()
            except Exception:  # noqa: BLE001
                pass
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.sweep()

    def sweep(self) -> None:
        """Kill processes that escaped the tree but carry this worker's home on their command line."""
        try:
            import psutil

            marker = self.home + "/"
            for proc in psutil.process_iter(["cmdline"]):
                if any(marker in arg for arg in proc.info["cmdline"] or ()):
                    try:
                        proc.kill()
                    except Exception:  # noqa: BLE001 - already gone
                        pass
        except Exception:  # noqa: BLE001
            pass
        sandbox.remove_tree(self.home)

    def quit(self) -> None:
        try:
            self.send({"cmd": "quit"})
            self.proc.wait(timeout=10)
            self.log.close()
            self.sweep()
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.kill()


class TracePool:
    """Pre-warmed trace workers; `trace(code, language, kinds)` blocks, `submit` returns a Future.

    A worker that does not answer within its job's timeout plus `kill_grace_s` is killed with everything it started
    and replaced; the job comes back as "timeout".
    """

    def __init__(
        self,
        num_workers: int = 1,
        timeout_s: float = 20.0,
        *,
        kill_grace_s: float = 5.0,
        limits: sandbox.Limits | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.timeout_s = float(timeout_s)
        self.kill_grace_s = float(kill_grace_s)
        self.limits = limits or sandbox.Limits(cpu_s=int(self.timeout_s) + 2)
        self.max_pixels = max_pixels
        # Job uids: a block of UIDS_PER_POOL below the render pools' range (sandbox.POOL_UID_BASE), so killing a
        # trace job's uid never reaches a RenderPool's jobs (nor, but for a 1-in-TRACE_UID_BLOCKS clash between
        # processes, another trace pool's).
        _POOL_COUNTER[0] += 1
        block = (os.getpid() * 131 + _POOL_COUNTER[0]) % TRACE_UID_BLOCKS
        self.uid_base = sandbox.JOB_UID_BASE + block * sandbox.UIDS_PER_POOL
        if num_workers > sandbox.UIDS_PER_POOL:
            raise ValueError(f"num_workers={num_workers} exceeds {sandbox.UIDS_PER_POOL} per pool")
        self.work_root = tempfile.mkdtemp(prefix="renderers-trace-")
        os.chmod(self.work_root, 0o711)
        self._idle: queue.Queue[tuple[int, _TraceProcess]] = queue.Queue()
        self._all: dict[int, _TraceProcess] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._dispatch = ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="trace-dispatch")
        deadline = time.monotonic() + start_timeout_s
        atexit.register(self.close)
        try:
            for slot in range(max(1, num_workers)):
                self._all[slot] = self._spawn(slot)
            for slot, proc in self._all.items():
                self._wait_ready(proc, deadline)
                self._idle.put((slot, proc))
        except BaseException:
            self.close()
            raise

    def _spawn(self, slot: int) -> _TraceProcess:
        config = {"slot": slot, "limits": asdict(self.limits), "max_pixels": self.max_pixels,
                  "work_root": self.work_root, "uid": self.uid_base + slot}  # fmt: skip
        return _TraceProcess(config)

    @staticmethod
    def _wait_ready(proc: _TraceProcess, deadline: float) -> None:
        header, _ = proc.read(deadline)
        if not header.get("ready"):
            raise RuntimeError(f"trace worker sent {header!r} instead of ready")

    def trace(
        self, code: str, language: str, kinds: Sequence[str] = (), options: dict[str, Any] | None = None
    ) -> TraceResult:
        options = dict(options or {})
        timeout_s = float(options.pop("timeout_s", self.timeout_s))
        slot, proc = self._idle.get()
        started = time.monotonic()
        request = {"language": language, "code": code, "options": options, "timeout_s": timeout_s,
                   "trace": list(kinds)}  # fmt: skip
        try:
            proc.send(request)
            header, payload = proc.read(started + timeout_s + self.kill_grace_s)
        except (TimeoutError, RuntimeError, OSError, ValueError) as err:
            proc.kill()
            sandbox.kill_uid(self.uid_base + slot)  # job processes that left the worker's process group
            replacement = self._spawn(slot)
            self._wait_ready(replacement, time.monotonic() + 120.0)
            with self._lock:
                self._all[slot] = replacement
            self._idle.put((slot, replacement))
            status = "timeout" if isinstance(err, TimeoutError) else "crashed"
            return TraceResult(status, None, f"trace worker gave no answer ({type(err).__name__})", 0.0)
        self._idle.put((slot, proc))
        status = header.get("status", "error")
        return TraceResult(
            status if status in ("ok", "error", "timeout", "crashed", "unsupported") else "error",
            payload if status == "ok" else None,
            str(header.get("error", ""))[:500],
            float(header.get("seconds", 0.0)),
            bool(header.get("blank", False)),
            trace=header.get("trace"),
        )

    def submit(self, *args: Any, **kwargs: Any) -> Future[TraceResult]:
        """`trace(...)` on one of the pool's dispatcher threads (one per worker)."""
        return self._dispatch.submit(self.trace, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            procs = list(self._all.values())
        self._dispatch.shutdown(wait=True)
        for proc in procs:
            proc.quit()
        sandbox.remove_tree(self.work_root)
        atexit.unregister(self.close)

    def __enter__(self) -> TracePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    main()
