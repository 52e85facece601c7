"""Golden renders: each language draws what the code says (colours at known places, sizes), not just something."""

from __future__ import annotations

import pytest

from renderers import RenderJob, RenderResult

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def close(pixel, expected, tol=8) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def render(pool, code: str, language: str, **options) -> RenderResult:
    result = pool.submit(RenderJob(code, language, options)).result()
    assert result.ok, result.error
    assert result.error == "" and result.seconds > 0
    return result


def test_python_matplotlib_figure_size_and_colours(pool):
    code = (
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure(figsize=(4, 3), dpi=50, facecolor='#00ff00')\n"
        "ax = fig.add_axes([0.25, 0.25, 0.5, 0.5])\n"
        "ax.set_facecolor('red'); ax.set_xticks([]); ax.set_yticks([])\n"
    )
    img = render(pool, code, "python").image()
    assert img.size == (200, 150)
    assert close(img.getpixel((100, 75)), RED)
    assert close(img.getpixel((5, 5)), GREEN)


def test_python_rdkit_molecule_drawing(pool):
    code = (
        "from rdkit import Chem\nfrom rdkit.Chem import Draw\n"
        "Draw.MolToImage(Chem.MolFromSmiles('O=C=O'), size=(240, 160)).save('co2.png')\n"
    )
    img = render(pool, code, "python").image()
    assert img.size == (240, 160)
    assert close(img.getpixel((1, 1)), WHITE)
    reds = sum(1 for p in img.getdata() if p[0] > 200 and p[1] < 80 and p[2] < 80)
    assert reds > 20  # the two oxygens are drawn in red


def test_svg_default_size_white_background_and_shapes(pool):
    code = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        '<rect x="0" y="0" width="50" height="50" fill="red"/>'
        '<rect x="50" y="50" width="50" height="50" fill="blue"/></svg>'
    )
    img = render(pool, code, "svg").image()
    assert img.size == (336, 336)
    assert close(img.getpixel((80, 80)), RED)
    assert close(img.getpixel((250, 250)), BLUE)
    assert close(img.getpixel((250, 80)), WHITE)  # transparent area lands on white


def test_svg_size_is_an_option(pool):
    code = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="10" height="10" fill="lime"/></svg>'
    )
    img = render(pool, code, "svg", width=120, height=60).image()
    assert img.size == (120, 60)
    assert close(img.getpixel((60, 30)), GREEN)


def test_html_viewport_screenshot_and_colours(pool):
    code = (
        "<html><body style='margin:0;background:#0000ff'>"
        "<div style='position:absolute;left:0;top:0;width:200px;height:100px;background:#ff0000'></div></body></html>"
    )
    img = render(pool, code, "html").image()
    assert img.size == (1280, 720)
    assert close(img.getpixel((100, 50)), RED)
    assert close(img.getpixel((900, 500)), BLUE)


def test_html_full_page_and_viewport_option(pool):
    code = "<html><body style='margin:0'><div style='height:1500px;background:#00ff00'></div></body></html>"
    img = render(pool, code, "html", viewport_width=400, viewport_height=300).image()
    assert img.size == (400, 1500)
    assert close(img.getpixel((200, 1400)), GREEN)


def test_html_animations_are_disabled(pool):
    code = (
        "<html><style>@keyframes go {from {background:#ff0000} to {background:#0000ff}}"
        "body {margin:0; animation: go 100s infinite}</style><body><p>x</p></body></html>"
    )
    img = render(pool, code, "html").image()
    # Playwright finishes finite animations and cancels infinite ones: the page shows its un-animated style.
    assert not close(img.getpixel((640, 600)), RED, tol=40)


def test_latex_snippet_is_wrapped_and_rendered_at_300_dpi(pool):
    code = r"\begin{tikzpicture}\fill[red] (0,0) rectangle (2cm,2cm);\end{tikzpicture}"
    img = render(pool, code, "latex").image()
    expected = round((20 + 2 * 3.14) / 25.4 * 300)  # 2 cm plus the 3.14 mm border on each side
    assert abs(img.size[0] - expected) <= 3 and abs(img.size[1] - expected) <= 3
    assert close(img.getpixel((img.size[0] // 2, img.size[1] // 2)), RED)
    assert close(img.getpixel((3, 3)), WHITE)


def test_latex_article_becomes_standalone_and_dpi_is_an_option(pool):
    code = (
        "\\documentclass{article}\n\\usepackage{tikz}\n\\begin{document}\n"
        "\\begin{tikzpicture}\\fill[blue] (0,0) circle (1cm);\\end{tikzpicture}\n\\end{document}\n"
    )
    img = render(pool, code, "latex", dpi=100).image()
    expected = round((20 + 2 * 3.14) / 25.4 * 100)  # cropped to the picture, not an A4 page
    assert abs(img.size[0] - expected) <= 3
    assert close(img.getpixel((img.size[0] // 2, img.size[1] // 2)), BLUE)


def test_latex_math_renders_ink(pool):
    img = render(pool, r"$\displaystyle \int_0^1 x^2\,dx = \frac{1}{3}$", "latex").image()
    dark = sum(1 for p in img.getdata() if sum(p) < 200)
    assert dark > 100


@pytest.mark.parametrize("language", ["mermaid", "rust", ""])
def test_unsupported_languages(pool, language):
    result = pool.submit(RenderJob("graph TD; A-->B", language)).result()
    assert result.status == "unsupported" and result.png is None and repr(language) in result.error
    assert not result.ok and result.image() is None


def test_blank_pictures_are_flagged(pool):
    blank_py = render(pool, "import matplotlib.pyplot as plt\nfig = plt.figure()\nplt.axis('off')\n", "python")
    assert blank_py.blank
    assert render(pool, '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "svg").blank
    drawn = render(pool, '<svg xmlns="http://www.w3.org/2000/svg"><circle cx="5" cy="5" r="5"/></svg>', "svg")
    assert not drawn.blank


def test_pixel_budget_rejects_large_outputs(pool):
    result = pool.submit(RenderJob('<svg xmlns="http://www.w3.org/2000/svg"/>', "svg", {"max_pixels": 1000})).result()
    assert result.status == "error" and "budget" in result.error
    tall = "<html><body style='margin:0'><div style='height:70000px;background:red'></div></body></html>"
    result = pool.submit(RenderJob(tall, "html")).result()  # 1280 x 70000 > 83,000,000 px
    assert result.status == "error" and "budget" in result.error


def test_render_batch_keeps_order_and_renders_duplicates_once(pool):
    code = '<svg xmlns="http://www.w3.org/2000/svg"><rect width="9" height="9" fill="red"/></svg>'
    jobs = [RenderJob(code, "svg", id="a"), RenderJob("nope", "mermaid"), RenderJob(code, "svg", id="b")]
    results = pool.render_batch(jobs)
    assert [r.status for r in results] == ["ok", "unsupported", "ok"]
    assert results[0] is results[2]  # one render shared by the identical jobs
