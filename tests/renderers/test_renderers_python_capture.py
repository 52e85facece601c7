"""The python capture rules: show, savefig anywhere, PIL/RDKit saves, no call at all, the last figure wins."""

from __future__ import annotations

import pytest

from renderers import RenderJob

HEADER = "import matplotlib.pyplot as plt\n"


def figure(colour: str, size=(2, 1)) -> str:
    return f"fig_{colour.lstrip('#')} = plt.figure(figsize={size}, dpi=50, facecolor='{colour}')\n"


def render_colour(pool, code: str):
    result = pool.submit(RenderJob(HEADER + code, "python")).result()
    assert result.ok, result.error
    img = result.image()
    return img.size, img.getpixel((img.size[0] // 2, img.size[1] // 2))


@pytest.mark.parametrize(
    "tail",
    [
        "plt.show()\n",
        "plt.savefig('out.png')\n",
        "plt.savefig('/nonexistent/dir/chart.png')\n",
        "plt.savefig('/root/elsewhere.pdf')\n",
        "import io\nplt.gcf().savefig(io.BytesIO(), format='png')\n",
        "",
    ],
    ids=["show", "savefig-job-dir", "savefig-unwritable-path", "savefig-pdf-elsewhere", "savefig-buffer", "no-call"],
)
def test_figure_is_captured_however_it_is_emitted(pool, tail):
    size, centre = render_colour(pool, figure("#ff0000") + tail)
    assert size == (100, 50)
    assert centre[:3] == (255, 0, 0)


def test_multiple_figures_take_the_last_one(pool):
    _, centre = render_colour(pool, figure("#ff0000") + figure("#0000ff", size=(3, 1)))
    assert centre[:3] == (0, 0, 255)


def test_later_figure_beats_an_earlier_savefig(pool):
    size, centre = render_colour(pool, figure("#ff0000") + "plt.savefig('a.png')\n" + figure("#0000ff", (3, 1)))
    assert size == (150, 50) and centre[:3] == (0, 0, 255)


def test_savefig_of_an_earlier_figure_after_a_later_one_wins(pool):
    code = (
        "a = plt.figure(figsize=(2, 1), dpi=50, facecolor='#ff0000')\n"
        "b = plt.figure(figsize=(3, 1), dpi=50, facecolor='#0000ff')\n"
        "a.savefig('/tmp/first.png')\n"
    )
    size, centre = render_colour(pool, code)
    assert size == (100, 50) and centre[:3] == (255, 0, 0)


def test_savefig_keeps_the_callers_dpi(pool):
    size, _ = render_colour(pool, figure("#00ff00") + "plt.savefig('big.png', dpi=100)\n")
    assert size == (200, 100)


def test_pil_image_save_is_captured_even_outside_the_job_dir(pool):
    code = "from PIL import Image\nImage.new('RGB', (64, 32), (0, 0, 255)).save('/root/pic.png')\n"
    size, centre = render_colour(pool, code)
    assert size == (64, 32) and centre == (0, 0, 255)


def test_rdkit_moltofile_and_drawing_text_are_captured(pool):
    code = (
        "from rdkit import Chem\nfrom rdkit.Chem import Draw\nfrom rdkit.Chem.Draw import rdMolDraw2D\n"
        "d = rdMolDraw2D.MolDraw2DCairo(180, 120)\n"
        "d.DrawMolecule(Chem.MolFromSmiles('CCO'))\nd.FinishDrawing()\nd.WriteDrawingText('mol.png')\n"
    )
    size, _ = render_colour(pool, code)
    assert size == (180, 120)
    svg_code = (
        "from rdkit import Chem\nfrom rdkit.Chem import Draw\n"
        "Draw.MolToFile(Chem.MolFromSmiles('c1ccccc1'), 'benzene.svg', size=(150, 90))\n"
    )
    size, _ = render_colour(pool, svg_code)
    assert size == (150, 90)


def test_nothing_drawn_is_an_error_not_a_blank_success(pool):
    result = pool.submit(RenderJob("x = 1 + 1\n", "python")).result()
    assert result.status == "error" and "drew nothing" in result.error


def test_exceptions_name_type_and_line(pool):
    result = pool.submit(RenderJob("import matplotlib.pyplot as plt\n\nplt.plot(undefined_name)\n", "python")).result()
    assert result.status == "error"
    assert result.error.startswith("NameError (line 3)") and "undefined_name" in result.error


def test_sys_exit_zero_still_captures(pool):
    _, centre = render_colour(pool, figure("#ff0000") + "import sys\nsys.exit(0)\n")
    assert centre[:3] == (255, 0, 0)
