"""python: matplotlib / RDKit / PIL drawing code, run in a sandboxed child forked from a warm worker.

Capture rules (the released reward misses the PIL case and accepts blank canvases; we do better):
- every `plt.show()` / `Figure.show()` / `savefig(...)` (any path, any file object), PIL `Image.save(...)` /
  `Image.show()` is a capture event; files with an image extension written into the job dir (RDKit
  `WriteDrawingText`, `MolToFile`, hand-written bytes) are events dated by their mtime;
- a figure still open at the end that was created after the last event is the final event; with no event at all
  the last open figure (highest number) is taken;
- the latest event wins ("multiple figures: the last one"). Nothing drawn at all is an error, a flat picture is
  flagged `blank`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import select
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from renderers import sandbox
from renderers.images import to_png
from renderers.types import INFRA

JOB_FILENAME = "<render job>"
MAX_RESULT_BYTES = 256 << 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def warm_up() -> None:
    """Import and exercise the drawing stacks once so forked children start with fonts and modules loaded."""
    sandbox.runtime_roots()  # computed once here, inherited by every forked job
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy  # noqa: F401
    from PIL import Image  # noqa: F401

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="warm")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")
    for optional in ("pandas", "seaborn", "scipy.stats"):  # what chart code imports most; forked jobs skip it
        try:
            __import__(optional)
        except ImportError:
            pass
    try:
        from rdkit import Chem
        from rdkit.Chem import Draw
        from rdkit.Chem.Draw import rdMolDraw2D  # noqa: F401

        Draw.MolToImage(Chem.MolFromSmiles("c1ccccc1O"), size=(100, 100))
    except ImportError:  # RDKit is optional for non-chemistry deployments
        pass


class _Capture:
    """Collects capture events as (wall time, producer of PNG bytes)."""

    def __init__(self, job_dir: str) -> None:
        self.job_dir = job_dir
        self.events: list[tuple[float, Callable[[], bytes]]] = []
        self.last_fignum = 0

    def add(self, producer: Callable[[], bytes]) -> None:
        import matplotlib.pyplot as plt

        self.events.append((time.time(), producer))
        self.last_fignum = max([self.last_fignum, *plt.get_fignums()])

    def inside_job_dir(self, path: Any) -> bool:
        try:
            full = os.path.realpath(os.fspath(path))
        except TypeError:
            return False
        return full.startswith(self.job_dir.rstrip("/") + "/")


def _figure_png(fig: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    kwargs = {k: v for k, v in kwargs.items() if k not in ("format", "fname")}
    _ORIGINAL["savefig"](fig, buf, format="png", **kwargs)
    return buf.getvalue()


def _file_png(path: str) -> bytes:
    if path.lower().endswith(".svg"):
        import cairosvg

        with open(path, "rb") as f:
            return cairosvg.svg2png(bytestring=f.read(), unsafe=False, background_color="white")
    from PIL import Image

    with Image.open(path) as img:
        return to_png(img)


_ORIGINAL: dict[str, Any] = {}


def _make_parent(path: Any) -> None:
    """Create the missing directories of an output path inside the job dir (chart code often assumes them)."""
    parent = os.path.dirname(os.path.realpath(os.fspath(path)))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:
        pass


def _install_hooks(capture: _Capture) -> None:
    """Route every way of showing or saving a picture through `capture`, keeping the user-visible behaviour."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from PIL import Image

    _ORIGINAL["savefig"] = Figure.savefig
    original_pil_save = Image.Image.save

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fname, (str, os.PathLike)) and capture.inside_job_dir(fname):
            _make_parent(fname)  # `plt.savefig('results/fig.png')` in a fresh dir: the figure, not FileNotFoundError
            result = _ORIGINAL["savefig"](self, fname, *args, **kwargs)
            path = os.fspath(fname)
            if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES:
                capture.add(lambda: _file_png(path))
            else:  # pdf/eps/... or no extension: draw it ourselves
                png = _figure_png(self, **kwargs)
                capture.add(lambda: png)
            return result
        png = _figure_png(self, **kwargs)
        capture.add(lambda: png)
        if isinstance(fname, (str, os.PathLike)):
            try:  # a path of the code's choosing outside its dir: not writable, and that is fine
                return _ORIGINAL["savefig"](self, fname, *args, **kwargs)
            except OSError:
                return None
        return _ORIGINAL["savefig"](self, fname, *args, **kwargs)

    def pyplot_savefig(*args: Any, **kwargs: Any) -> Any:
        return plt.gcf().savefig(*args, **kwargs)

    def show_figure(fig: Figure) -> None:
        capture.add(lambda: _figure_png(fig))

    def pyplot_show(*args: Any, **kwargs: Any) -> None:
        nums = plt.get_fignums()
        if nums:
            show_figure(plt.figure(max(nums)))

    def figure_show(self: Figure, *args: Any, **kwargs: Any) -> None:
        show_figure(self)

    def pil_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = self.copy()
        capture.add(lambda: to_png(snapshot))
        if isinstance(fp, (str, os.PathLike)) and capture.inside_job_dir(fp):
            _make_parent(fp)
        try:
            return original_pil_save(self, fp, *args, **kwargs)
        except OSError:
            if isinstance(fp, (str, os.PathLike)) and not capture.inside_job_dir(fp):
                return None
            raise

    def pil_show(self: Image.Image, *args: Any, **kwargs: Any) -> None:
        snapshot = self.copy()
        capture.add(lambda: to_png(snapshot))

    Figure.savefig = savefig
    Figure.show = figure_show
    plt.savefig = pyplot_savefig
    plt.show = pyplot_show
    Image.Image.save = pil_save
    Image.Image.show = pil_show


def _written_images(job_dir: str, since: float) -> list[tuple[float, Callable[[], bytes]]]:
    found = []
    for root, _dirs, files in os.walk(job_dir):
        for name in files:
            path = os.path.join(root, name)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not os.path.islink(path):
                mtime = os.stat(path).st_mtime
                if mtime >= since:
                    found.append((mtime, lambda p=path: _file_png(p)))
    return found


def _final_png(capture: _Capture, started: float) -> bytes | None:
    import matplotlib.pyplot as plt

    events = list(capture.events) + _written_images(capture.job_dir, started)
    newer_figures = [n for n in plt.get_fignums() if n > capture.last_fignum]
    if newer_figures:
        fig = plt.figure(max(newer_figures))
        events.append((time.time(), lambda: _figure_png(fig)))
    if not events:
        return None
    return max(events, key=lambda e: e[0])[1]()


def _describe_exception(err: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == JOB_FILENAME]
    where = f" (line {frames[-1].lineno})" if frames else ""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}{where}: {message}"[:500]


def run_job_code(code: str, job_dir: str) -> tuple[str, bytes | None, str]:
    """Execute `code` in this (already sandboxed) process and return (status, png, error)."""
    started = time.time() - 1.0  # mtime granularity: files written right after start still count
    capture = _Capture(job_dir)
    _install_hooks(capture)
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": os.path.join(job_dir, "job.py")}
    try:
        exec(compile(code, JOB_FILENAME, "exec"), namespace)
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            return "error", None, f"the code called sys.exit({exit_.code!r})"
    except MemoryError:
        return "error", None, "MemoryError: the code exceeded its memory limit"
    except BaseException as err:  # noqa: BLE001 - any failure of untrusted code is a render error
        return "error", None, _describe_exception(err)
    try:
        png = _final_png(capture, started)
    except Exception as err:  # noqa: BLE001
        return "error", None, f"could not capture the figure: {_describe_exception(err)}"
    if png is None:
        return "error", None, "the code drew nothing: no figure open and nothing shown or saved"
    return "ok", png, ""


def _write_result(fd: int, status: str, png: bytes | None, error: str) -> None:
    header = json.dumps({"status": status, "error": error, "png_len": len(png or b"")}).encode() + b"\n"
    data = header + (png or b"")
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _child(
    code: str, job_dir: str, fd: int, setup_fd: int, limits: sandbox.Limits, uid: int | None, isolate: bool
) -> None:
    """Runs in the forked job process: isolate, drop privileges, limit, execute, report. Never returns.

    A setup failure is reported on `setup_fd`, which is closed before the job's code runs: the code cannot forge
    an infrastructure failure (it could write anything to the result pipe)."""
    status = 1
    try:
        try:
            sandbox.close_inherited_fds(keep=(fd, setup_fd))
            if isolate:
                sandbox.isolate_filesystem(job_dir, limits)
            os.chdir(job_dir)
            os.environ.clear()
            os.environ.update(sandbox.scrubbed_env(job_dir))
            if uid is not None:
                sandbox.drop_privileges(uid)
            sandbox.apply_rlimits(limits)
        except BaseException as err:  # noqa: BLE001
            _report_setup_failure(setup_fd, err)
            os._exit(1)
        os.close(setup_fd)
        result = run_job_code(code, job_dir)
        _write_result(fd, *result)
        status = 0
    finally:
        os._exit(status)


def _report_setup_failure(setup_fd: int, err: BaseException) -> None:
    try:
        os.write(setup_fd, f"{type(err).__name__}: {err}"[:500].encode(errors="replace"))
    except OSError:
        pass


def _fork_job(
    code: str, job_dir: str, limits: sandbox.Limits, uid: int | None, namespaces: bool
) -> tuple[int, int, int]:
    """Fork the job process; as root it is pid 1 of a fresh pid namespace and unshares its own mount and network
    namespaces (so killing it takes every process it started along). Returns (pid, result fd, setup-failure fd)."""
    read_fd, write_fd = os.pipe()
    setup_read, setup_write = os.pipe()
    namespace_error: OSError | None = None
    if namespaces:
        try:
            pid = sandbox.fork_into_new_pid_namespace()
        except OSError as err:  # reported by a plain child below, as the job's sandbox setup failure
            namespace_error, pid = err, os.fork()
    else:
        pid = os.fork()
    if pid != 0:
        os.close(write_fd)
        os.close(setup_write)
        return pid, read_fd, setup_read
    os.close(read_fd)
    os.close(setup_read)
    try:
        sandbox.die_with_parent()
        os.setsid()
        if namespace_error is not None:
            raise namespace_error
        if namespaces:
            sandbox.unshare(sandbox.CLONE_NEWNS | sandbox.CLONE_NEWNET)
    except BaseException as err:  # noqa: BLE001
        _report_setup_failure(setup_write, err)
        os._exit(70)
    try:
        _child(code, job_dir, write_fd, setup_write, limits, uid, namespaces)
    except BaseException:  # noqa: BLE001
        os._exit(70)
    os._exit(71)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def render_python(
    code: str,
    options: Mapping[str, Any],
    job_dir: str,
    limits: sandbox.Limits,
    uid: int | None,
    timeout_s: float,
    namespaces: bool | None = None,
) -> tuple[str, bytes | None, str]:
    """Render one python job in a sandboxed child; the child is killed at the wall-clock deadline.

    `namespaces` (default: when root) puts the job in fresh pid, mount and network namespaces."""
    namespaces = sandbox.is_root() if namespaces is None else namespaces
    status, png, error = _run_forked(code, job_dir, limits, uid, timeout_s, namespaces)
    if status == "error":
        probe = _infra_probe(error)
        if probe is not None:
            # the job failed to import something the worker has (or to read one of its files): if trusted code
            # fails the same way in the same sandbox, the sandbox is at fault, not the model's code
            probe_status, _, probe_error = _run_forked(probe, job_dir, limits, uid, timeout_s, namespaces)
            if probe_status == "error" and _error_kind(probe_error) == _error_kind(error):
                return INFRA, None, f"sandbox cannot provide what the worker has: {probe_error}"[:500]
    return status, png, error


_MISSING_MODULE = re.compile(r"^(?:ModuleNotFoundError|ImportError)(?: \(line \d+\))?: No module named '([\w.]+)'")
_DENIED_PATH = re.compile(r"^PermissionError(?: \(line \d+\))?: \[Errno 13\] Permission denied: '(/[^']+)'")


def _error_kind(error: str) -> str:
    match = re.match(r"\w+", error)
    return match.group(0) if match else ""


def _infra_probe(error: str) -> str | None:
    """Trusted code that redoes what a job failed at, when the worker itself can do it (else None)."""
    match = _MISSING_MODULE.match(error)
    if match:
        name = match.group(1)
        try:
            available = importlib.util.find_spec(name.split(".")[0]) is not None
        except (ImportError, ValueError):
            available = False
        return f"import {name}\n" if available else None
    match = _DENIED_PATH.match(error)
    if match:
        path = os.path.realpath(match.group(1))
        if os.path.exists(path) and any(sandbox._under(path, root) for root in sandbox.runtime_roots()):
            return f"open({path!r}, 'rb').close()\n"
    return None


def _run_forked(
    code: str, job_dir: str, limits: sandbox.Limits, uid: int | None, timeout_s: float, namespaces: bool
) -> tuple[str, bytes | None, str]:
    pid, read_fd, setup_fd = _fork_job(code, job_dir, limits, uid, namespaces)
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    timed_out = False
    received = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > MAX_RESULT_BYTES:
                _kill(pid, uid)
                os.close(setup_fd)
                return "error", None, f"the python job returned more than {MAX_RESULT_BYTES} bytes"
    finally:
        os.close(read_fd)
    if timed_out:
        _kill(pid, uid)
        os.close(setup_fd)
        return "timeout", None, f"python job exceeded its {timeout_s:g} s wall-clock limit"
    _, wstatus = os.waitpid(pid, 0)
    setup_failure = _read_all(setup_fd)  # every writer has exited or closed it by now
    if setup_failure:
        return INFRA, None, f"sandbox setup failed: {setup_failure.decode(errors='replace')}"[:500]
    exit_code = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else 128 + os.WTERMSIG(wstatus)
    data = b"".join(chunks)
    if b"\n" not in data:
        if exit_code > 128:
            name = _signal_name(exit_code - 128)
            if name == "SIGXCPU":
                return "timeout", None, f"python job exceeded its {limits.cpu_s} s CPU limit"
            return "error", None, f"the python process was killed by {name} (crash, stack overflow or a limit)"
        return "error", None, f"the python process exited with status {exit_code} without a result"
    header_line, payload = data.split(b"\n", 1)
    try:  # the job could have written to the pipe itself: trust nothing in the header
        header = json.loads(header_line)
        status, error, png_len = header["status"], str(header["error"])[:500], int(header["png_len"])
    except (ValueError, KeyError, TypeError):
        return "error", None, "the python process returned a malformed result"
    if status not in ("ok", "error"):
        return "error", None, "the python process returned a malformed result"
    return status, (payload[:png_len] if status == "ok" else None), error


def _read_all(fd: int) -> bytes:
    """What a pipe holds once its writers are gone (setup-failure messages are short)."""
    try:
        os.set_blocking(fd, False)
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kill(pid: int, uid: int | None) -> None:
    if uid is not None:
        sandbox.kill_uid(uid)  # also whatever the job started, wherever it went
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
