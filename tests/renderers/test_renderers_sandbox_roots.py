"""The sandbox keeps the Python installation readable when it lives under a scratch dir (e.g. a CI clone in /tmp)."""

import subprocess
import sys
from pathlib import Path

from renderers import sandbox


def test_runtime_roots_keep_only_scratch_paths_and_collapse_nesting(tmp_path):
    venv = tmp_path / "clone" / ".venv"
    site = venv / "lib" / "site-packages"
    site.mkdir(parents=True)
    roots = sandbox.runtime_roots([str(venv), str(site), "/usr/lib", str(tmp_path / "missing"), "/tmp"])
    assert roots == [str(venv.resolve())]  # /usr is not hidden; nested site-packages collapses; /tmp itself never


def test_job_reads_its_interpreter_prefix_under_tmp(tmp_path):
    """An interpreter whose prefix is under /tmp (a CI clone's venv): the job still reads files from it."""
    import site

    venv = Path("/tmp") / f"vj-roots-{tmp_path.name}"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site_dir = next(venv.glob("lib/python*/site-packages"))
        (site_dir / "vinci_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        job = "import sys\nimport matplotlib.pyplot as plt\nplt.title(open(sys.prefix + '/pyvenv.cfg').read()[:8])\n"
        code = (
            "from renderers import RenderJob, RenderPool\n"
            "with RenderPool(num_workers=1, languages=['python'], timeout_s=20) as pool:\n"
            f"    r = pool.render_batch([RenderJob({job + 'plt.plot([1, 2])'!r}, 'python')])[0]\n"
            "print(r.status, r.error)\n"
        )
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=root, capture_output=True, text=True,
                              timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(venv)], check=False)
    assert proc.stdout.startswith("ok"), proc.stdout + proc.stderr[-2000:]
