"""Traced renders keep the renderer's guarantees: a hung job times out and the worker keeps serving; a job runs
as another uid in a private dir, so it cannot touch the caller's files."""

import os

import pytest

from renderers import sandbox
from renderers.trace_run import TracePool


@pytest.fixture(scope="module")
def pool():
    with TracePool(1, timeout_s=3.0) as p:
        yield p


def test_hung_job_times_out_and_worker_survives(pool):
    hung = pool.trace("while True:\n    pass\n", "python", ["matplotlib"])
    assert hung.status == "timeout" and hung.png is None
    ok = pool.trace("import matplotlib.pyplot as plt\nplt.title('after')\nplt.show()\n", "python", ["matplotlib"])
    assert ok.ok and "after" in ok.trace["matplotlib"]["chartmimic"]["texts"]


@pytest.mark.skipif(not sandbox.is_root(), reason="uid and mount isolation need root")
def test_job_cannot_write_the_callers_files(pool, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("intact")
    os.chmod(tmp_path, 0o755)
    code = f"open({str(victim)!r}, 'w').write('owned')\n"
    result = pool.trace(code, "python", ["matplotlib"])
    # /tmp is a fresh tmpfs inside the job (FileNotFoundError); elsewhere the job's uid lacks the rights
    assert result.status == "error" and ("FileNotFoundError" in result.error or "PermissionError" in result.error)
    assert victim.read_text() == "intact"


def test_render_pool_trace_option_returns_the_trace():
    """The renderers hook: RenderJob(options={"trace": ...}) -> RenderResult.trace, plain jobs unchanged."""
    from renderers import RenderJob, RenderPool

    chart = "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4], color='red')\nplt.title('Hook')\nplt.show()\n"
    with RenderPool(1, languages=("python",)) as render_pool:
        traced, plain = render_pool.render_batch(
            [RenderJob(chart, "python", {"trace": "matplotlib"}), RenderJob(chart, "python")]
        )
    assert traced.ok and plain.ok and plain.trace is None
    record = traced.trace["matplotlib"]["chartmimic"]
    assert "Hook" in record["texts"] and record["types"] == {"matplotlib.axes.Axes.bar": 1}
    assert record["colors"] == [["bar", "#FF0000"]]  # two red bars: one (callable, colour) pair
