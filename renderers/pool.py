"""RenderPool: N pre-warmed worker processes, one dispatcher thread per worker, hard per-job deadlines.

A job's wall-clock limit is first enforced inside the worker (the python child is killed, pdflatex is killed, the
Chromium page is abandoned) and, should the worker itself not answer by `timeout_s + kill_grace_s`, by killing the
worker's whole process tree and starting a fresh one; other workers never notice.
"""

from __future__ import annotations

import atexit
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
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from renderers import sandbox
from renderers.images import DEFAULT_MAX_PIXELS
from renderers.types import INFRA, SUPPORTED_LANGUAGES, RenderInfraError, RenderJob, RenderResult

_POOL_COUNTER = [0]
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


WARM_UP_CODE = {
    "python": "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.title('warm')\n",
    "latex": r"\begin{tikzpicture}\draw (0,0) -- (1,1) node {$x$};\end{tikzpicture}",
}


# Known-good code per language: each must render (not blank) or the pool cannot work here. The python one also
# imports stdlib and chart modules the warm worker may not hold and saves into a missing subdirectory, so the
# sandbox's view of the installation is exercised, not just the warm worker's memory.
SELF_CHECK_CODE = {
    "python": (
        "import secrets, statistics\nimport numpy as np\nimport pandas as pd\nimport seaborn as sns\n"
        "import matplotlib.pyplot as plt\nnp.random.seed(0)\n"
        "plt.plot(pd.Series(np.random.rand(4)).cumsum(), label=str(statistics.mean([1, 2])))\n"
        "plt.legend()\nplt.savefig('self-check/out.png')\n"
    ),
    "svg": '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="20" height="20"/></svg>',
    "html": "<html><body><p style='font-size:32px'>self-check</p></body></html>",
    "latex": r"\begin{tikzpicture}\draw[thick] (0,0) -- (1,1) node[right] {$x^2$};\end{tikzpicture}",
}


class WorkerDied(RenderInfraError):
    """A worker closed its pipe or never became ready (at start-up this is the pool's infrastructure failure)."""


class _WorkerProcess:
    """One worker subprocess and its pipes. Its pid is also its process-group id (new session)."""

    def __init__(self, config: dict[str, Any], log_path: str) -> None:
        # A private HOME/TMPDIR per worker: Chromium's profile and its crashpad handlers (which re-parent to init
        # and start their own sessions) all name it on their command line, which is how kill() finds them.
        self.home = tempfile.mkdtemp(prefix=f"h{config['slot']}-", dir=config["work_root"])
        env = sandbox.scrubbed_env(self.home, {"PYTHONPATH": _PACKAGE_PARENT, "PYTHONDONTWRITEBYTECODE": "1"})
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "renderers.worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=config["work_root"],
            start_new_session=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        try:
            self.ready = self.read_header(deadline)
        except (WorkerDied, TimeoutError, ValueError) as err:
            what = "render worker did not get ready in time" if isinstance(err, TimeoutError) else str(err)
            raise WorkerDied(f"{what or type(err).__name__}; its log ends: {self.log_tail()}") from err
        if not self.ready.get("ready"):
            cause = self.ready.get("error") or repr(self.ready)
            raise WorkerDied(f"render worker could not start: {str(cause)[:1000]}")
        return self.ready

    def log_tail(self, limit: int = 600) -> str:
        """The end of the worker's stderr (an import error's traceback ends there)."""
        try:
            with open(self.log.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text.replace("\n", " | ") or "(empty)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            raise WorkerDied("render worker closed its pipe")
        self.buffer += chunk

    def read_header(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self._fill(deadline)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def kill(self) -> None:
        """Kill the worker and everything it started (Chromium, TeX, job children)."""
        try:
            import psutil

            family = psutil.Process(self.pid).children(recursive=True)
        except Exception:  # noqa: BLE001 - already gone
            family = []
        for target in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: self.proc.kill()):
            try:
                target()
            except OSError:
                pass
        for child in family:
            try:
                child.kill()
            except Exception:  # noqa: BLE001
                pass
        self.proc.wait()
        self._close_pipes()
        self.sweep()

    def sweep(self) -> None:
        """Kill stragglers that escaped the process tree (Chromium's crashpad handlers) and remove the home dir."""
        try:
            import psutil

            marker = self.home + "/"
            for proc in psutil.process_iter(["cmdline"]):
                if any(marker in arg for arg in proc.info["cmdline"] or ()):
                    try:
                        proc.kill()
                    except Exception:  # noqa: BLE001
                        pass
        except Exception:  # noqa: BLE001
            pass
        sandbox.remove_tree(self.home)

    def quit(self, timeout_s: float = 10.0) -> None:
        try:
            self.send({"cmd": "quit"})
            self.proc.wait(timeout=timeout_s)
            self._close_pipes()
            self.sweep()
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.kill()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            try:
                stream.close()
            except OSError:
                pass


class RenderPool:
    """Pre-warmed sandboxed renderers. Use as a context manager, or call close().

    Args:
      num_workers: worker processes (default: CPU count).
      languages: languages to warm up (default: all); others still render, just warm up on first use.
      timeout_s: default per-job wall-clock limit; a job's options["timeout_s"] overrides it.
      kill_grace_s: extra time a worker gets to report a timeout itself before it is killed and replaced.
      limits: per-job rlimits; max_pixels: output budget; work_root: where private job dirs are made.
      isolate: use namespaces and per-job uids when root (False forces the unprivileged fallback, for tests).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        languages: Sequence[str] | None = None,
        timeout_s: float = 10.0,
        *,
        kill_grace_s: float = 1.0,
        limits: sandbox.Limits | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        work_root: str | None = None,
        start_timeout_s: float = 120.0,
        isolate: bool = True,
    ) -> None:
        self.num_workers = int(num_workers or os.cpu_count() or 1)
        self.languages = tuple(languages) if languages is not None else SUPPORTED_LANGUAGES
        self.timeout_s = float(timeout_s)
        self.kill_grace_s = float(kill_grace_s)
        self.limits = limits or sandbox.Limits(cpu_s=int(self.timeout_s) + 2)
        self.max_pixels = int(max_pixels)
        self.isolate = bool(isolate)
        self._own_root = work_root is None
        self.work_root = tempfile.mkdtemp(prefix="renderers-", dir=_work_parent()) if work_root is None else work_root
        os.makedirs(self.work_root, exist_ok=True)
        os.chmod(self.work_root, 0o711)
        self.format_dir: str | None = None
        self.formats: dict[str, bool] = {}
        self._queue: queue.Queue[tuple[RenderJob, Future[RenderResult]] | None] = queue.Queue()
        self._workers: list[_WorkerProcess | None] = [None] * self.num_workers
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        self._spawn_errors: dict[int, str] = {}
        self.capabilities: dict[str, bool] = {}
        _POOL_COUNTER[0] += 1
        block = (os.getpid() * 131 + _POOL_COUNTER[0]) % sandbox.UID_BLOCKS
        self.uid_base = sandbox.POOL_UID_BASE + block * sandbox.UIDS_PER_POOL
        if self.num_workers > sandbox.UIDS_PER_POOL:
            raise ValueError(f"num_workers={self.num_workers} exceeds {sandbox.UIDS_PER_POOL} per pool")
        atexit.register(self.close)
        try:
            self._start(start_timeout_s)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- lifecycle
    def _worker_config(self, slot: int) -> dict[str, Any]:
        return {
            "slot": slot,
            "languages": list(self.languages),
            "limits": asdict(self.limits),
            "max_pixels": self.max_pixels,
            "format_dir": self.format_dir,
            "work_root": self.work_root,
            "uid": self.uid_base + slot,
            "isolate": self.isolate,
        }

    def _spawn(self, slot: int) -> _WorkerProcess:
        return _WorkerProcess(self._worker_config(slot), os.path.join(self.work_root, f"worker-{slot}.log"))

    def _start(self, start_timeout_s: float) -> None:
        if "latex" in self.languages:
            from renderers.lang_latex import build_formats, tools_available

            if tools_available():
                self.format_dir = os.path.join(self.work_root, "formats")
        workers = [self._spawn(slot) for slot in range(self.num_workers)]
        self._workers = list(workers)
        if self.format_dir:  # built while the workers warm up; no job is dispatched before both are done
            self.formats = build_formats(self.format_dir)
        deadline = time.monotonic() + start_timeout_s
        for worker in workers:
            try:
                ready = worker.wait_ready(deadline)
            except WorkerDied as err:
                raise RenderInfraError(f"render pool could not start: {err}") from err
            self.capabilities = ready.get("capabilities", {})
        if not self.capabilities.get("namespaces"):
            import warnings

            warnings.warn(
                "renderers: no namespaces (not root, or isolate=False), so jobs share the worker's uid and network "
                "namespace; only rlimits, private dirs and scrubbed environments apply (see renderers/README.md)",
                RuntimeWarning,
                stacklevel=3,
            )
        self._threads = [
            threading.Thread(target=self._slot_loop, args=(slot,), name=f"render-slot-{slot}", daemon=True)
            for slot in range(self.num_workers)
        ]
        self._warm = [threading.Event() for _ in range(self.num_workers)]
        for thread in self._threads:
            thread.start()
        for event in self._warm:
            event.wait(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop every worker and remove every file the pool made. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in range(self.num_workers):
            self._queue.put(None)
        for thread in getattr(self, "_threads", []):
            thread.join(timeout=self.timeout_s + self.kill_grace_s + 5)
        for worker in self._workers:
            if worker is not None:
                worker.quit()
        self._workers = [None] * self.num_workers
        if self._own_root:
            sandbox.remove_tree(self.work_root)
        atexit.unregister(self.close)

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w is not None]

    # ---------------------------------------------------------------- jobs
    def submit(self, job: RenderJob) -> Future[RenderResult]:
        future: Future[RenderResult] = Future()
        if self._closed:
            raise RuntimeError("RenderPool is closed")
        if job.language not in SUPPORTED_LANGUAGES:
            future.set_result(
                RenderResult(
                    "unsupported",
                    None,
                    f"language {job.language!r} has no renderer (supported: {', '.join(SUPPORTED_LANGUAGES)})",
                    0.0,
                )
            )
            return future
        self._queue.put((job, future))
        return future

    def render_batch(self, jobs: Sequence[RenderJob]) -> list[RenderResult]:
        """Render all jobs, identical ones (same language, code and options) only once; results in input order."""
        futures: dict[tuple[str, str, str], Future[RenderResult]] = {}
        for job in jobs:
            key = job.dedupe_key()
            if key not in futures:
                futures[key] = self.submit(job)
        return [futures[job.dedupe_key()].result() for job in jobs]

    def _warm_up(self, slot: int) -> None:
        """One tiny job per language through the real path, so the first real job pays no first-use costs."""
        for language in self.languages:
            if language in WARM_UP_CODE:
                self._run(slot, RenderJob(WARM_UP_CODE[language], language, {"timeout_s": 30.0}))

    def _slot_loop(self, slot: int) -> None:
        try:
            self._warm_up(slot)
        finally:
            self._warm[slot].set()
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = self._run(slot, job)
            except BaseException as err:  # noqa: BLE001 - the future must always get an answer
                result = RenderResult(INFRA, None, f"render pool failure: {type(err).__name__}: {err}", 0.0)
            future.set_result(result)
            if self._workers[slot] is None and not self._closed:
                self._replace(slot)

    def _replace(self, slot: int) -> None:
        worker = None
        try:
            worker = self._spawn(slot)
            worker.wait_ready(time.monotonic() + 120.0)
            self._workers[slot] = worker
            self._warm_up(slot)
            self.restarts += 1
            self._spawn_errors.pop(slot, None)
        except Exception as err:  # noqa: BLE001 - retried on the next job of this slot
            self._spawn_errors[slot] = f"{type(err).__name__}: {err}"[:800]
            if worker is not None:
                worker.kill()
            self._workers[slot] = None

    def self_check(self, languages: Sequence[str] | None = None) -> dict[str, RenderResult]:
        """One known-good job per language through every worker-facing path; RenderInfraError naming the cause
        when any of them does not render. Training and data builds call it before their first step."""
        languages = [lang for lang in (languages or self.languages) if lang in SELF_CHECK_CODE]
        jobs = [RenderJob(SELF_CHECK_CODE[lang], lang, {"timeout_s": max(self.timeout_s, 30.0)}) for lang in languages]
        results = dict(zip(languages, self.render_batch(jobs), strict=True))
        failed = {lang: r for lang, r in results.items() if not r.ok or r.blank}
        if failed:
            causes = "; ".join(f"{lang}: {r.status}: {r.error or 'blank picture'}" for lang, r in failed.items())
            raise RenderInfraError(f"render pool self-check failed ({causes})")
        return results

    def _run(self, slot: int, job: RenderJob) -> RenderResult:
        started = time.monotonic()
        timeout_s = float(job.options.get("timeout_s", self.timeout_s))
        if self._workers[slot] is None:
            self._replace(slot)
            started = time.monotonic()
        worker = self._workers[slot]
        if worker is not None and not worker.alive():  # died between jobs: not this job's doing
            code = worker.proc.poll()
            self._discard(slot)
            self._replace(slot)
            started = time.monotonic()
            worker = self._workers[slot]
            if worker is None:
                cause = self._spawn_errors.get(slot, "unknown")
                return RenderResult(
                    INFRA, None, f"the render worker died outside a job (exit {code}); no replacement: {cause}", 0.0
                )
        if worker is None:
            cause = self._spawn_errors.get(slot, "unknown")
            return RenderResult(INFRA, None, f"no render worker could be started for this slot: {cause}", 0.0)
        deadline = started + timeout_s + self.kill_grace_s
        try:
            worker.send(
                {
                    "seq": 0,
                    "language": job.language,
                    "code": job.code,
                    "options": dict(job.options),
                    "timeout_s": timeout_s,
                }
            )
            header = worker.read_header(deadline)
            png = worker.read_exact(int(header["png_len"]), deadline) if header["png_len"] else None
        except TimeoutError:
            self._discard(slot)
            return RenderResult(
                "timeout",
                None,
                f"{job.language} job exceeded its {timeout_s:g} s limit; its worker was replaced",
                time.monotonic() - started,
            )
        except (WorkerDied, OSError, ValueError, KeyError) as err:
            code = worker.proc.poll()
            self._discard(slot)
            return RenderResult(
                "crashed",
                None,
                f"the render worker died during this {job.language} job ({err}; exit {code})",
                time.monotonic() - started,
            )
        return RenderResult(
            status=header["status"],
            png=png,
            error=header["error"],
            seconds=time.monotonic() - started,
            blank=bool(header.get("blank", False)),
            trace=header.get("trace") if isinstance(header.get("trace"), dict) else None,
        )

    def _discard(self, slot: int) -> None:
        worker = self._workers[slot]
        self._workers[slot] = None
        if worker is not None:
            worker.kill()
            _remove_slot_dirs(self.work_root, slot)
            if sandbox.is_root() and self.isolate:
                sandbox.kill_uid(self.uid_base + slot)


def _work_parent() -> str | None:
    """The temp dir, unless the job uids could not reach it (e.g. TMPDIR inside a 0700 home): then /tmp."""
    parent = tempfile.gettempdir()
    if sandbox.is_root() and (sandbox.traversal_blocker(os.path.join(parent, "x")) or not os.stat(parent).st_mode & 1):
        return "/tmp"
    return None


def _remove_slot_dirs(work_root: str, slot: int) -> None:
    """The job root of a worker slot is `w{slot}-*`; after a kill the whole thing goes."""
    try:
        names = os.listdir(work_root)
    except OSError:  # the work root itself is gone: nothing left to remove
        return
    for name in names:
        if name.startswith(f"w{slot}-"):
            sandbox.remove_tree(os.path.join(work_root, name))


def render_one(job: RenderJob, **pool_kwargs: Any) -> RenderResult:
    """Render a single job in a throwaway one-worker pool warmed for its language only (for CLIs and tests)."""
    if job.language not in SUPPORTED_LANGUAGES:
        return RenderResult("unsupported", None, f"language {job.language!r} has no renderer", 0.0)
    with RenderPool(num_workers=1, languages=[job.language], **pool_kwargs) as pool:
        return pool.submit(job).result()
