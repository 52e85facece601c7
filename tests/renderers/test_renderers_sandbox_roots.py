"""Jobs run as an unprivileged uid, yet must import from an interpreter, venv and checkout that may live in a 0700
directory (a clone in root's home, a pyenv build): the job's mount namespace masks such directories with a tmpfs and
binds back only the runtime roots. These tests build the 0700 situations themselves."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from renderers import sandbox

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(not sandbox.is_root(), reason="the job uid and mount namespaces need root")


@pytest.fixture
def private_dir():
    """A fresh 0700 directory outside the scratch dirs (which jobs never see anyway): in $HOME when usable."""
    home = os.path.expanduser("~")
    base = home if os.path.isdir(home) and not home.startswith(sandbox.SCRATCH_DIRS) else str(REPO)
    path = tempfile.mkdtemp(prefix="vj-0700-", dir=base)
    os.chmod(path, 0o700)
    yield Path(path)
    subprocess.run(["rm", "-rf", path], check=False)


def test_runtime_roots_collapse_nesting_and_skip_missing(tmp_path):
    venv = tmp_path / "clone" / ".venv"
    site_dir = venv / "lib" / "site-packages"
    site_dir.mkdir(parents=True)
    roots = sandbox.runtime_roots([str(venv), str(site_dir), "/usr/lib", str(tmp_path / "missing")])
    assert roots == sorted([str(venv.resolve()), "/usr/lib"])


def test_default_roots_hold_the_interpreter_and_the_package_but_not_the_checkout():
    roots = sandbox.runtime_roots()
    covered = lambda path: any(sandbox._under(os.path.realpath(path), r) for r in roots)  # noqa: E731
    assert covered(sysconfig.get_paths()["stdlib"]) and covered(sys.base_prefix) and covered(sys.prefix)
    assert all(covered(p) for p in site.getsitepackages())
    assert covered(REPO / "renderers" / "sandbox.py")
    if not any(sandbox._under(str(REPO), os.path.realpath(p)) for p in site.getsitepackages()):
        assert not covered(REPO / "pyproject.toml")  # the rest of the checkout stays out of the job's view


def test_mount_plan_masks_the_outermost_unsearchable_ancestor(private_dir):
    venv = private_dir / "clone" / ".venv"
    venv.mkdir(parents=True)
    job_dir = "/tmp/renderers-x/w0-y/job-z"
    plan = sandbox.mount_plan(job_dir, [str(venv), "/usr/lib", "/tmp/renderers-x"])
    assert plan.read_only == (str(venv),)  # /usr/lib needs no mask; the job dir's ancestor is never bound
    masks = [m for m in plan.masks if sandbox._under(str(venv), m)]
    assert len(masks) == 1 and not os.stat(masks[0]).st_mode & 0o001
    parent = os.path.dirname(masks[0])
    assert os.stat(parent).st_mode & 0o001  # outermost: everything above it is searchable
    assert set(sandbox.SCRATCH_DIRS) & set(plan.masks)


CHARTS = {
    "np_random": "import numpy as np\nimport matplotlib.pyplot as plt\n"
    "np.random.seed(0)\nplt.hist(np.random.rand(9))\n",
    "statistics": "import statistics\nimport matplotlib.pyplot as plt\nplt.bar([0, 1], [statistics.mean([1, 2]), 2])\n",
    "pandas": "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3], 'y': [3, 1, 2]})\ndf.plot(x='x', y='y')\n",
    "seaborn_savefig_new_dir": (
        "import seaborn as sns\nimport pandas as pd\nimport matplotlib.pyplot as plt\nsns.set_theme()\n"
        "sns.barplot(data=pd.DataFrame({'k': ['a', 'b'], 'v': [1, 2]}), x='k', y='v')\n"
        "plt.savefig('results/out/fig.png', dpi=50)\n"
    ),
}

# Runs inside the 0700 layout, with the copied checkout's renderers and the 0700 venv's interpreter.
INNER = r"""
import json, os, sys
from renderers import RenderJob, RenderPool
from renderers.trace_run import TracePool
charts, secret, private = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
probe = ("import os, sys, renderers\nimport matplotlib.pyplot as plt\n"
         "assert sys.base_prefix.startswith(%r), sys.base_prefix\n"
         "assert renderers.__file__.startswith(%r), renderers.__file__\n"
         "assert sorted(os.listdir(%r)) == ['clone', 'python'], os.listdir(%r)\n"
         "assert not os.path.exists(%r + '/clone/NOT_BOUND')\n"
         "plt.plot([1, 2])\n") % (private, private, private, private, private)
jobs = {name: RenderJob(code, "python") for name, code in charts.items()}
jobs["probe"] = RenderJob(probe, "python")
PY = "import matplotlib.pyplot as plt\n"
jobs["secret"] = RenderJob(PY + "plt.title(open(%r).read())\nplt.plot([1])\n" % secret, "python")
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="9" height="9"/></svg>'
jobs["svg"] = RenderJob(SVG, "svg")
jobs["html"] = RenderJob("<p style='font-size:40px'>hello</p>", "html")
jobs["latex"] = RenderJob(r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}", "latex")
out = {}
with RenderPool(num_workers=1, timeout_s=20) as pool:
    for name, r in zip(jobs, pool.render_batch(list(jobs.values()))):
        out[name] = [r.status, r.error]
    traced = pool.submit(RenderJob(charts["pandas"], "python", {"trace": "matplotlib"})).result()
    out["pool_trace"] = [traced.status, traced.error, sorted(traced.trace or {})]
with TracePool(num_workers=1, timeout_s=20) as tracer:
    r = tracer.trace(PY + "plt.title('T')\nplt.plot([1, 2])\n", "python", ["matplotlib", "rdkit"])
    out["trace_python"] = [r.status, r.error, sorted(r.trace or {})]
    r = tracer.trace("<p>traced</p>", "html", ["html"])
    out["trace_html"] = [r.status, r.error, sorted(r.trace or {})]
print("RESULT " + json.dumps(out))
"""


def _bind(source: str, target: str) -> None:
    sandbox.mount(source, target, None, sandbox.MS_BIND | sandbox.MS_REC)


@needs_root
def test_clone_venv_and_interpreter_inside_a_0700_dir_render_every_language(private_dir):
    """Interpreter prefix, venv (with its site-packages) and checkout all under one 0700 directory, as in a clone
    in root's home with a pyenv there. The big trees are bind-mounted into place (in the test's own mount namespace)
    rather than copied: what matters is that their paths lie under the 0700 directory."""
    python, clone = private_dir / "python", private_dir / "clone"
    python.mkdir()
    clone.mkdir()
    shutil.copytree(REPO / "renderers", clone / "renderers", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "NOT_BOUND").write_text("the rest of the checkout")
    secret = private_dir / "secret.txt"
    secret.write_text("TOPSECRET")
    os.chmod(secret, 0o644)  # readable by anyone who can reach it: only the 0700 parent protects it
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    shared_site = site.getsitepackages()[0]
    venv = clone / ".venv"

    def enter_namespace() -> None:
        sandbox.unshare(sandbox.CLONE_NEWNS)
        sandbox.mount(None, "/", None, sandbox.MS_REC | sandbox.MS_PRIVATE)
        _bind(os.path.realpath(sys.base_prefix), str(python))

    script = (
        f"set -e; {python}/bin/{version} -m venv --without-pip {venv}; "
        f"mount --bind {shared_site} {venv}/lib/{version}/site-packages; "
        f'exec {venv}/bin/python -c "$INNER" "$CHARTS" {secret} {private_dir}'
    )
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(clone), "INNER": INNER,
           "CHARTS": json.dumps(CHARTS), "HOME": str(private_dir)}  # fmt: skip
    proc = subprocess.run(["/bin/sh", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=400, preexec_fn=enter_namespace)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    for name in [*CHARTS, "probe", "svg", "html", "latex"]:
        assert out[name][0] == "ok", (name, out[name])
    status, error = out["secret"]
    assert status == "error" and "No such file" in error and "TOPSECRET" not in error
    assert out["pool_trace"][0] == "ok" and out["pool_trace"][2] == ["matplotlib"], out["pool_trace"]
    assert out["trace_python"][0] == "ok" and out["trace_python"][2] == ["matplotlib", "rdkit"], out["trace_python"]
    assert out["trace_html"][0] == "ok" and out["trace_html"][2] == ["html"], out["trace_html"]
