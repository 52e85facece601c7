"""The hostile corpus: every item ends with a clear error or a harmless picture within timeout + 2 s, nothing
escapes (files, network, processes), and afterwards the pool serves a normal batch as fast as before.

Network attempts only ever target the HTTP server this module starts on 127.0.0.1; it must see no request.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
import uuid

import psutil
import pytest

from renderers import RenderJob, RenderPool
from renderers.sandbox import JOB_UID_BASE, POOL_UID_BASE, UID_BLOCKS, UIDS_PER_POOL

TIMEOUT_S = 3.0


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server API
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def hostile_pool():
    with RenderPool(num_workers=2, timeout_s=TIMEOUT_S) as pool:
        yield pool


def normal_batch() -> list[RenderJob]:
    charts = [
        f"import matplotlib.pyplot as plt\nplt.bar(range(5), [{i}, 3, 1, 4, 2])\nplt.title('chart {i}')\n"
        for i in range(6)
    ]
    svgs = [
        f'<svg xmlns="http://www.w3.org/2000/svg"><circle cx="50" cy="50" r="{r}" fill="red"/></svg>' for r in (9, 19)
    ]
    html = "<html><body><h1>Report</h1><table><tr><td>1</td><td>2</td></tr></table></body></html>"
    latex = r"\begin{tikzpicture}\draw[->] (0,0) -- (2,1) node[right] {$y=x/2$};\end{tikzpicture}"
    return (
        [RenderJob(c, "python") for c in charts]
        + [RenderJob(s, "svg") for s in svgs]
        + [RenderJob(html, "html"), RenderJob(latex, "latex")]
    )


def batch_seconds(pool: RenderPool, runs: int = 3) -> float:
    """Best of `runs` wall times for the normal batch (best-of filters out the other tenants of this machine)."""
    best = float("inf")
    for _ in range(runs):
        start = time.monotonic()
        results = pool.render_batch(normal_batch())
        best = min(best, time.monotonic() - start)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return best


def job_uid_processes(pool=None) -> list[psutil.Process]:
    """Processes running as a job uid: of `pool`'s block only (other tenants of the machine run pools too)."""
    low, high = JOB_UID_BASE, POOL_UID_BASE + UID_BLOCKS * UIDS_PER_POOL
    if pool is not None:
        low, high = pool.uid_base, pool.uid_base + UIDS_PER_POOL
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids and low <= uids.real < high:
            found.append(proc)
    return found


def corpus(server: str, secret_path: str, tmp_outside: str, host_tmp_marker: str) -> dict[str, tuple[RenderJob, set]]:
    """name -> (job, allowed statuses)."""
    py = "import matplotlib.pyplot as plt\n"
    entity_svg = (
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY s SYSTEM "file://{secret_path}">]>'
        '<svg xmlns="http://www.w3.org/2000/svg"><text y="20">&s;</text></svg>'
    )
    href_svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="50" height="50">'
        f'<image xlink:href="file://{secret_path}" width="50" height="50"/>'
        f'<image xlink:href="{server}/svg-image.png" width="50" height="50"/></svg>'
    )
    net_html = (
        f"<html><head><link rel='stylesheet' href='{server}/style.css'><script src='{server}/app.js'></script></head>"
        f"<body><img src='{server}/img.png'><iframe src='{server}/frame'></iframe>"
        f"<script>fetch('{server}/fetch'); new Image().src = '{server}/beacon';</script><p>net</p></body></html>"
    )
    return {
        "python-infinite-loop": (RenderJob("while True:\n    pass\n", "python"), {"timeout"}),
        "python-sleep": (RenderJob("import time\ntime.sleep(60)\n", "python"), {"timeout"}),
        "python-fork-bomb": (RenderJob("import os\nwhile True:\n    os.fork()\n", "python"), {"error", "timeout"}),
        "python-huge-allocation": (RenderJob("x = bytearray(10**12)\n", "python"), {"error"}),
        "python-deep-recursion": (RenderJob("def f(n):\n    return f(n + 1)\nf(0)\n", "python"), {"error"}),
        "python-stack-overflow": (
            RenderJob("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)\n", "python"),
            {"error", "timeout"},  # frames live on the heap in 3.11: memory limit or wall clock, whichever first
        ),
        "python-write-outside": (
            RenderJob(
                py + f"open({tmp_outside!r}, 'w').write('x')\nplt.plot([1, 2])\n",
                "python",
            ),
            {"error"},
        ),
        "python-write-host-tmp": (
            RenderJob(py + f"open({host_tmp_marker!r}, 'w').write('x')\nplt.plot([1, 2])\n", "python"),
            {"ok"},  # lands in the job's private tmpfs, which vanishes with it
        ),
        "python-read-secret": (
            RenderJob(py + f"plt.title(open({secret_path!r}).read())\nplt.plot([1, 2])\n", "python"),
            {"error"},
        ),
        "python-network": (
            RenderJob(py + f"import urllib.request\nurllib.request.urlopen({server + '/py'!r}, timeout=2)\n", "python"),
            {"error"},
        ),
        "latex-write18": (
            RenderJob(
                f"\\immediate\\write18{{touch {host_tmp_marker}-tex}}\n\\begin{{tikzpicture}}\\draw (0,0) -- (1,1);"
                "\\end{tikzpicture}",
                "latex",
            ),
            {"ok"},
        ),
        "latex-input-outside": (RenderJob(f"\\input{{{secret_path}}}\n", "latex"), {"error"}),
        "latex-openout-outside": (
            RenderJob(
                f"\\newwrite\\f\\immediate\\openout\\f={host_tmp_marker}-out.tex\\immediate\\write\\f{{x}}"
                "\\immediate\\closeout\\f\n$x$",
                "latex",
            ),
            {"error"},
        ),
        "latex-endless-loop": (RenderJob(r"\def\x{\x}\x", "latex"), {"timeout"}),
        "svg-external-entity": (RenderJob(entity_svg, "svg"), {"error"}),
        "svg-file-and-url-href": (RenderJob(href_svg, "svg"), {"ok"}),
        "html-endless-js": (
            RenderJob("<html><body><script>while (true) {}</script></body></html>", "html"),
            {"timeout"},
        ),
        "html-network": (RenderJob(net_html, "html"), {"ok"}),
        "html-dialogs": (
            RenderJob("<script>alert('a'); confirm('b'); prompt('c')</script><p>after</p>", "html"),
            {"ok"},
        ),
    }


def test_hostile_corpus_is_contained_and_the_pool_keeps_serving(hostile_pool, server, tmp_path):
    pool = hostile_pool
    before = batch_seconds(pool)
    secret_path = str(tmp_path / "secret.txt")
    with open(secret_path, "w") as f:
        f.write("TOPSECRET")
    os.chmod(secret_path, 0o600)
    tmp_outside = str(tmp_path / "pwned.txt")
    host_tmp_marker = f"/tmp/renderers-hostile-{uuid.uuid4().hex}"
    items = corpus(server, secret_path, tmp_outside, host_tmp_marker)

    futures = {name: pool.submit(job) for name, (job, _) in items.items()}
    for name, future in futures.items():
        result = future.result(timeout=120)
        allowed = items[name][1]
        assert result.status in allowed, f"{name}: {result.status} {result.error}"
        assert result.seconds <= TIMEOUT_S + 2.0, f"{name} took {result.seconds:.1f} s"
        if result.status != "ok":
            assert result.error, name
        else:
            assert "TOPSECRET" not in result.error
    assert "TOPSECRET" not in futures["python-read-secret"].result().error
    # /tmp is an empty private tmpfs for python jobs (FileNotFound); elsewhere the job uid lacks permission.
    assert any(w in futures["python-read-secret"].result().error for w in ("Permission", "No such file"))
    assert futures["svg-file-and-url-href"].result().blank  # nothing external was drawn
    assert "openin_any" in futures["latex-input-outside"].result().error or "not found" in (
        futures["latex-input-outside"].result().error
    )
    assert "entit" in futures["svg-external-entity"].result().error
    assert not os.path.exists(tmp_outside)
    for suffix in ("", "-tex", "-out.tex"):
        assert not os.path.exists(host_tmp_marker + suffix), suffix
    assert _Recorder.hits == [], f"the sandbox let requests through: {_Recorder.hits}"

    # Nothing left behind: no job processes, no job dirs.
    deadline = time.monotonic() + 5
    while job_uid_processes(pool) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_uid_processes(pool) == []
    leftovers = [
        os.path.join(root, d) for root, dirs, _ in os.walk(pool.work_root) for d in dirs if d.startswith("job-")
    ]
    assert leftovers == []

    # Still serving, and not slowed by leftovers of the hostile jobs (a stuck spinner or fork bomb would at least
    # double it; best of 3, re-measured to ride out other tenants' load spikes on a 2-core machine).
    after = batch_seconds(pool)
    for _ in range(2):
        if after <= before * 1.5:
            break
        before, after = min(before, batch_seconds(pool)), batch_seconds(pool)
    assert after <= before * 1.5, f"normal batch slowed from {before:.2f} s to {after:.2f} s"


def test_hung_worker_is_killed_and_replaced_without_disturbing_the_other(hostile_pool):
    pool = hostile_pool
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGSTOP)  # a worker that no longer answers at all
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5"/></svg>'
    jobs = [RenderJob(svg.replace('"5"', f'"{i + 1}"'), "svg", {"timeout_s": 1.0}) for i in range(6)]
    start = time.monotonic()
    results = [pool.submit(job) for job in jobs]
    results = [f.result(timeout=60) for f in results]
    statuses = [r.status for r in results]
    assert statuses.count("timeout") == 1 and statuses.count("ok") == 5, statuses
    assert time.monotonic() - start < 10
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    assert pool.submit(RenderJob(svg, "svg")).result().ok
    deadline = time.monotonic() + 60
    while (pool.restarts < 1 or len(pool.worker_pids()) < 2) and time.monotonic() < deadline:
        time.sleep(0.2)  # the replacement warms up (Chromium, TeX) in the background of its slot
    assert pool.restarts >= 1 and len(pool.worker_pids()) == 2 and victim not in pool.worker_pids()


def test_crashed_chromium_is_relaunched_and_the_job_retried(hostile_pool):
    pool = hostile_pool
    browsers = [
        p
        for pid in pool.worker_pids()
        for p in psutil.Process(pid).children(recursive=True)
        if "chrom" in p.name().lower()
    ]
    assert browsers, "each warm worker should hold a Chromium"
    for proc in browsers:
        proc.kill()
    psutil.wait_procs(browsers, timeout=5)
    html = "<html><body style='background:#00ff00'>back</body></html>"
    # A relaunch costs a browser start; give the retried job room on a loaded 2-core machine.
    results = pool.render_batch([RenderJob(html, "html", {"k": i, "timeout_s": 20.0}) for i in range(2)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert results[0].image().getpixel((640, 600)) == (0, 255, 0)


def processes_mentioning(path: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(path in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_closing_the_pool_leaves_no_process_or_file():
    pool = RenderPool(num_workers=1, languages=["python", "html"], timeout_s=TIMEOUT_S)
    assert pool.submit(RenderJob("while True: pass", "python")).result().status == "timeout"
    assert pool.submit(RenderJob("<p>hi</p>", "html")).result().ok
    family = [p for pid in pool.worker_pids() for p in [psutil.Process(pid), *psutil.Process(pid).children(True)]]
    assert processes_mentioning(pool.work_root)  # Chromium (and its crashpad helpers) run from the pool's dirs
    pool.close()
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []
    assert processes_mentioning(pool.work_root) == []  # including helpers that re-parented to init
    assert not os.path.exists(pool.work_root)


def test_unprivileged_fallback_still_limits_and_times_out(monkeypatch):
    """isolate=False is what a non-root deployment gets: it must say so, and still enforce limits and deadlines."""
    monkeypatch.setenv("VINCI_TEST_SECRET", "s3cret")  # the workers' environment is scrubbed anyway
    with pytest.warns(RuntimeWarning, match="no namespaces"):
        pool = RenderPool(num_workers=1, languages=["python"], timeout_s=TIMEOUT_S, isolate=False)
    with pool:
        assert pool.capabilities["namespaces"] is False and pool.capabilities["rlimits"] is True
        chart = pool.submit(RenderJob("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", "python")).result()
        assert chart.ok and not chart.blank
        env = pool.submit(
            RenderJob(
                "import os\nassert 'VINCI_TEST_SECRET' not in os.environ\nimport matplotlib.pyplot"
                " as plt\nplt.plot([1])\n",
                "python",
            )
        ).result()
        assert env.ok, env.error
        assert pool.submit(RenderJob("x = bytearray(10**12)\n", "python")).result().status == "error"
        start = time.monotonic()
        assert pool.submit(RenderJob("while True:\n    pass\n", "python")).result().status == "timeout"
        assert time.monotonic() - start <= TIMEOUT_S + 2.0
