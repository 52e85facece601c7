"""Infrastructure failures: their own status (never the code's failure), a self-check that names the cause, and
fault injection (a worker killed mid-batch or between jobs, a browser that will not start, a full job tmpfs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from renderers import RenderInfraError, RenderJob, RenderPool, sandbox
from renderers.health import InfraBudget
from renderers.types import RenderResult

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(not sandbox.is_root(), reason="namespaces, job uids and tmpfs need root")
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="{}" height="9"/></svg>'


def pool_uid_processes(pool: RenderPool) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids and pool.uid_base <= uids.real < pool.uid_base + sandbox.UIDS_PER_POOL:
            found.append(proc)
    return found


def job_roots(pool: RenderPool) -> list[str]:
    """The workers' job roots as they see them (tmpfs mounts in their own mount namespaces)."""
    roots = []
    for slot, worker in enumerate(pool._workers):
        if worker is not None:
            base = f"/proc/{worker.pid}/root{pool.work_root}"
            roots += [os.path.join(base, n) for n in os.listdir(base) if n.startswith(f"w{slot}-")]
    return roots


def job_dirs(pool: RenderPool) -> list[str]:
    return [d for root in job_roots(pool) for d in os.listdir(root) if d.startswith("job-")]


@pytest.fixture(scope="module")
def py_pool():
    """Two python workers whose job dirs are a small tmpfs (8 MiB), so filling one is quick."""
    limits = sandbox.Limits(cpu_s=20, job_dirs_mb=8)
    with RenderPool(num_workers=2, languages=["python", "svg"], timeout_s=15.0, limits=limits) as pool:
        yield pool


def test_infra_is_a_distinct_status_that_never_reads_as_ok():
    result = RenderResult("infra", None, "chromium failed to start", 0.0)
    assert result.infra and not result.ok
    assert not RenderResult("error", None, "SyntaxError", 0.0).infra


def test_budget_stops_on_any_infra_in_the_first_batch_and_over_the_fraction_later():
    budget = InfraBudget(0.05)
    ok, infra = RenderResult("ok", b"x", "", 0.0), RenderResult("infra", None, "sandbox setup failed: EPERM", 0.0)
    budget.check_results([ok] * 30, ["svg"] * 30, first=True)
    with pytest.raises(RenderInfraError, match=r"1 of 30 .*first batch.*python: sandbox setup failed: EPERM \(x1\)"):
        budget.check_results([ok] * 29 + [infra], ["svg"] * 29 + ["python"], first=True)
    budget.check_results([ok] * 29 + [infra], ["svg"] * 30, first=False)  # 3% of a later batch: tolerated
    with pytest.raises(RenderInfraError, match=r"2 of 20 .*over the 5% limit"):
        budget.check_results([ok] * 18 + [infra] * 2, ["svg"] * 20, first=False)


@needs_root
def test_worker_killed_mid_batch_fails_only_its_job_and_is_replaced(py_pool):
    pool = py_pool
    victim = pool.worker_pids()[0]
    restarts = pool.restarts
    slow = "import time\nimport matplotlib.pyplot as plt\ntime.sleep(3)\nplt.plot([1, 2])\n"
    futures = [pool.submit(RenderJob(slow, "python", {"k": i})) for i in range(2)]  # one per worker
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    futures += [pool.submit(RenderJob(CHART, "python", {"k": i})) for i in range(4)]
    results = [f.result(timeout=120) for f in futures]
    statuses = [r.status for r in results]
    assert sorted(statuses[:2]) == ["crashed", "ok"] and statuses[2:] == ["ok"] * 4, [r.error for r in results]
    crashed = results[statuses.index("crashed")]
    assert "died during this python job" in crashed.error
    deadline = time.monotonic() + 60
    while (pool.restarts == restarts or len(pool.worker_pids()) < 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim not in pool.worker_pids() and len(pool.worker_pids()) == 2
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    time.sleep(0.5)
    assert pool_uid_processes(pool) == [] and job_dirs(pool) == []


@needs_root
def test_worker_killed_between_jobs_is_replaced_before_the_next_job(py_pool):
    pool = py_pool
    victim = pool.worker_pids()[1]
    os.kill(victim, signal.SIGKILL)
    psutil.Process(victim).wait(5) if psutil.pid_exists(victim) else None
    results = pool.render_batch([RenderJob(SVG.format(i + 1), "svg") for i in range(4)])
    assert [r.status for r in results] == ["ok"] * 4, [r.error for r in results]  # not the jobs' fault, not lost
    assert victim not in pool.worker_pids()


@needs_root
def test_a_job_filling_its_tmpfs_gets_an_error_and_the_space_comes_back(py_pool):
    pool = py_pool
    fill = "for i in range(64):\n    open(f'blob{i}', 'wb').write(b'x' * (1 << 20))\n"
    results = pool.render_batch([RenderJob(fill, "python"), RenderJob(CHART, "python")])
    assert results[0].status == "error" and "No space left" in results[0].error, results[0].error
    assert results[1].ok
    for root in job_roots(pool):  # the filled dir is gone: every worker's job tmpfs is empty again
        stats = os.statvfs(root)
        assert stats.f_bfree == stats.f_blocks, root
    after = pool.render_batch([RenderJob(fill.replace("64", "2"), "python"), RenderJob(CHART, "python", {"k": 1})])
    assert [r.status for r in after] == ["error", "ok"]  # draws nothing, but the writes fit again
    assert "drew nothing" in after[0].error


@needs_root
def test_forged_import_error_stays_the_codes_failure(py_pool):
    forged = "raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')\n"
    missing = "import vinci_no_such_module_xyz\n"
    results = py_pool.render_batch([RenderJob(forged, "python"), RenderJob(missing, "python")])
    assert [r.status for r in results] == ["error", "error"], [r.error for r in results]


@needs_root
def test_sandbox_setup_failure_is_infra_and_the_self_check_names_it():
    broken = sandbox.Limits(tmpfs_mb=-1)  # the job's scratch tmpfs cannot be mounted
    with RenderPool(num_workers=1, languages=["python"], timeout_s=10.0, limits=broken) as pool:
        result = pool.submit(RenderJob(CHART, "python")).result()
        assert result.status == "infra" and "sandbox setup failed" in result.error and "mount" in result.error
        with pytest.raises(RenderInfraError, match=r"self-check failed \(python: infra: sandbox setup failed"):
            pool.self_check()


@needs_root
def test_job_is_pid_1_of_its_own_namespace_and_the_worker_stays_in_its_own(py_pool):
    """One fork per job: the job is pid 1 of a fresh pid namespace, and what the worker starts afterwards is not."""
    job = "import os\nassert os.getpid() == 1, os.getpid()\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
    results = py_pool.render_batch([RenderJob(job, "python", {"k": i}) for i in range(3)])  # a worker forks again
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
    own = os.readlink("/proc/self/ns/pid")
    pid = sandbox.fork_into_new_pid_namespace()
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 3)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert os.readlink("/proc/self/ns/pid_for_children") == own
    assert subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip() != "1"


@needs_root
def test_a_pid_namespace_that_cannot_be_made_is_infra(tmp_path, monkeypatch):
    from renderers.lang_python import render_python

    def refuse() -> int:
        raise PermissionError(1, "unshare: Operation not permitted")

    monkeypatch.setattr(sandbox, "fork_into_new_pid_namespace", refuse)
    status, png, error = render_python(CHART, {}, str(tmp_path), sandbox.Limits(), None, 10.0, namespaces=True)
    assert status == "infra" and png is None and "sandbox setup failed" in error and "unshare" in error, error


@needs_root
def test_no_replacement_worker_is_infra_and_the_pool_recovers():
    with RenderPool(num_workers=1, languages=["svg"], timeout_s=5.0) as pool:
        assert pool.self_check()["svg"].ok
        shutil.rmtree(pool.work_root)
        Path(pool.work_root).write_text("not a directory")  # nowhere to start a worker
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        time.sleep(0.3)
        result = pool.submit(RenderJob(SVG.format(3), "svg")).result()
        assert result.status == "infra" and "died outside a job" in result.error, result.error
        assert "NotADirectoryError" in result.error
        os.remove(pool.work_root)
        os.makedirs(pool.work_root)
        assert pool.submit(RenderJob(SVG.format(4), "svg")).result().ok


def test_browser_that_cannot_start_is_infra(tmp_path):
    from renderers.lang_html import HtmlRenderer
    from renderers.worker import Worker

    worker = Worker({"slot": 0, "languages": ["html"], "limits": {}, "work_root": str(tmp_path), "uid": 0,
                     "isolate": False})  # fmt: skip
    worker.html = HtmlRenderer(executable_path=str(tmp_path / "no-chromium"))
    try:
        header, payload = worker.handle({"language": "html", "code": "<p>x</p>", "timeout_s": 10.0})
    finally:
        worker.close()
    assert header["status"] == "infra" and "chromium failed to start" in header["error"] and payload == b""


def test_worker_that_cannot_import_fails_the_check_with_its_traceback(tmp_path):
    shutil.copytree(REPO / "renderers", tmp_path / "renderers", ignore=shutil.ignore_patterns("__pycache__"))
    worker = tmp_path / "renderers" / "worker.py"
    source = worker.read_text().replace("import gc\n", "import gc\nimport vinci_missing_dependency_xyz\n", 1)
    worker.write_text(source)  # as if a dependency of the worker were not installed
    proc = subprocess.run(
        [sys.executable, "-m", "renderers", "check", "--languages", "svg"],
        cwd=tmp_path, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "render worker closed its pipe" in proc.stderr
    assert "No module named 'vinci_missing_dependency_xyz'" in proc.stderr


@pytest.mark.slow  # the passing path is the self-check every ViRL run and data build does at start
def test_check_command_passes_here():
    proc = subprocess.run(
        [sys.executable, "-m", "renderers", "check", "--languages", "python,svg"],
        cwd=REPO, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split(":")[0] for line in proc.stdout.splitlines()[:2]] == ["python", "svg"]
