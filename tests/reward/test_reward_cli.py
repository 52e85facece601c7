"""`python -m vinci_jax.reward score`: a real matplotlib render through `renderers`, scored against a target."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from vinci_jax.reward.__main__ import main  # noqa: E402

CODE = """import matplotlib.pyplot as plt
plt.figure(figsize=(4, 3))
plt.bar(["a", "b", "c"], [3, 1, 2], color="tab:blue")
plt.title("demo")
"""


@pytest.fixture(scope="module")
def chart_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    plt.figure(figsize=(4, 3))
    plt.bar(["a", "b", "c"], [3, 2, 2], color="tab:orange")
    plt.title("demo")
    plt.savefig(root / "target.png")
    plt.close("all")
    (root / "good.txt").write_text(f"Here it is:\n```python\n{CODE}```\n")
    (root / "broken.txt").write_text("```python\nraise SystemExit(this is not python\n```\n")
    return root


@pytest.mark.parametrize("use_dinov2", [False, True])
def test_cli_scores_a_real_render(chart_files, tiny_dinov2, capsys, use_dinov2):
    argv = ["score", "--prompt", "Write python code for this chart", "--response", str(chart_files / "good.txt")]
    argv += ["--target", str(chart_files / "target.png")]
    if use_dinov2:
        argv += ["--encoder", tiny_dinov2[0]]
    main(argv)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["render_status"] == "ok" and out["language"] == "python" and out["format"] == 1.0
    assert out["encoder"] == ("dinov2:cls_pre_ln:float32" if use_dinov2 else "offline-msssim-hist")
    assert 0.5 < out["visual"] < 1.0
    assert out["total"] == pytest.approx(0.9 * out["visual"] + 0.1)


def test_cli_broken_code_scores_0_1(chart_files, capsys):
    main(
        ["score", "--prompt", "python please", "--response", str(chart_files / "broken.txt")]
        + ["--target", str(chart_files / "target.png")]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["render_status"] == "render_error" and out["total"] == 0.1 and out["execution"] == 0.0
