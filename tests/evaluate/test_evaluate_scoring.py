"""Gold code scores 1 on every metric of its suite; controlled perturbations move the right component; a crashing
prediction is kept as not executed. Real renders: sandboxed trace workers (matplotlib, RDKit, Chromium), cairosvg,
pdflatex; targets are the renders of the gold code (samples without a picture)."""

import pytest

from vinci_jax.evaluate import DOMAIN_METRICS, Evaluator, make_sample


@pytest.fixture(scope="module")
def evaluator():
    with Evaluator() as ev:
        yield ev


def _run(evaluator, suite, domain, gold, predictions):
    samples = [make_sample(suite, domain, name, None, gold) for name in predictions]
    result = evaluator.evaluate(suite, samples, list(predictions.values()))
    return {row["id"]: row for row in result.rows}, result.summary


def _assert_gold_perfect(row, domain):
    assert row["executed"] and row["status"] == "ok"
    for name in ("execution", "visual", *DOMAIN_METRICS[domain]):
        assert row["metrics"][name] == pytest.approx(1.0, abs=1e-5), name


def _chart(titles=("Sales", "Trend", "Share"), colour="tab:red", panels=3, tail="plt.show()"):
    lines = ["import matplotlib.pyplot as plt", f"fig, axs = plt.subplots(1, {panels}, figsize=(9, 3), squeeze=False)",
             "axs = axs[0]", f"axs[0].bar(['a', 'b', 'c'], [3, 1, 2], color='{colour}')",
             f"axs[0].set_title('{titles[0]}')",
             "axs[1].plot([1, 2, 3], [2, 3, 1], color='tab:blue', marker='o')",
             f"axs[1].set_title('{titles[1]}')"]  # fmt: skip
    if panels == 3:
        lines += ["axs[2].scatter([1, 2], [1, 2], color='tab:green')", f"axs[2].set_title('{titles[2]}')"]
    return "\n".join(lines + ["plt.tight_layout()", tail]) + "\n"


def test_chart_gold_and_perturbations(evaluator):
    gold = _chart()
    rows, summary = _run(evaluator, "chartmimic", "chart", gold, {
        "gold": gold,
        "colour": _chart(colour="tab:purple"),
        "no_subplot": _chart(panels=2),
        "text": _chart(titles=("Revenue", "Trend", "Share")),
        "crash": _chart(tail="raise RuntimeError('boom')"),
        "white": "import matplotlib.pyplot as plt\nplt.figure()\nplt.show()\n",
        "late_error": gold + "raise RuntimeError('after the show')\n",
    })  # fmt: skip
    _assert_gold_perfect(rows["gold"], "chart")
    colour = rows["colour"]["metrics"]
    assert colour["color_f1"] < 0.95 and colour["text_f1"] == colour["layout_f1"] == colour["type_f1"] == 1.0
    sub = rows["no_subplot"]["metrics"]
    assert sub["layout_f1"] < 1.0 and sub["type_f1"] < 1.0
    text = rows["text"]["metrics"]
    assert text["text_f1"] < 1.0 and text["text_match"] < 1.0
    assert text["color_f1"] == text["layout_f1"] == text["type_f1"] == 1.0
    crash = rows["crash"]
    assert not crash["executed"] and crash["status"] == "error" and "boom" in crash["error"]
    assert crash["metrics"]["execution"] == crash["metrics"]["visual"] == 0.0
    # ChartMimic's published means count a failed run as 0 (what it drew, here everything, stays in the row);
    # Plot2Code leaves it out
    assert crash["metrics"]["low_level"] == 0.0 and crash["chartmimic_failed_run"]["low_level"] == 1.0
    assert crash["metrics"]["text_match"] is None
    late = rows["late_error"]  # fails after its first plt.show(): ChartMimic cuts the code there, so it counts
    assert not late["executed"] and late["metrics"]["low_level"] == 1.0
    white = rows["white"]  # runs, draws an empty white figure: Plot2Code skips it, ChartMimic finds nothing
    assert white["executed"] and white["metrics"]["text_match"] is None and white["metrics"]["low_level"] == 0.0
    assert summary["num_samples"] == 7 and summary["execution_rate"] == pytest.approx(5 / 7)
    assert summary["counts"]["text_match"] == 4
    assert "high_level" in summary["not_computed"]  # judge score, no judge given


PAGE = """<html><body style="font-family: sans-serif; margin: 20px">
<h1 style="color: {colour}">{title}</h1><p>Fresh vegetables delivered every morning.</p>
<div style="margin-top: 40px"><a href="#">Contact us</a></div></body></html>"""


def test_web_gold_and_perturbations(evaluator):
    gold = PAGE.format(colour="#203060", title="Green Market")
    rows, summary = _run(evaluator, "design2code", "web", gold, {
        "gold": gold,
        "colour": PAGE.format(colour="#e02020", title="Green Market"),
        "text": PAGE.format(colour="#203060", title="Green Market Place"),
        "other_text": PAGE.format(colour="#203060", title="Blue Bazaar Shop"),
    })  # fmt: skip
    _assert_gold_perfect(rows["gold"], "web")
    colour, text = rows["colour"]["metrics"], rows["text"]["metrics"]
    assert colour["color"] < 1.0 and colour["text"] == colour["block_match"] == 1.0
    assert text["text"] < 1.0 and text["color"] == 1.0
    # a heading too different to match is a missing block and an extra block: block-match drops
    assert rows["other_text"]["metrics"]["block_match"] < 1.0
    assert "clip" in summary["not_computed"]


SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><rect x="10" y="10" width="50" height="50" '
SVG += 'fill="{fill}"/><circle cx="70" cy="70" r="20" fill="orange"/></svg>'


def test_svg_gold_perturbation_and_failure(evaluator):
    gold = SVG.format(fill="navy")
    rows, summary = _run(evaluator, "unisvg", "svg", gold,
                         {"gold": gold, "fill": SVG.format(fill="crimson"), "broken": "<svg><rect"})  # fmt: skip
    _assert_gold_perfect(rows["gold"], "svg")
    assert rows["fill"]["metrics"]["ssim"] < 1.0 and rows["fill"]["metrics"]["visual"] < 1.0
    # an unrenderable SVG is left out of the SSIM mean, as UniSVG's script skips it
    assert not rows["broken"]["executed"] and rows["broken"]["metrics"]["ssim"] is None
    assert summary["counts"]["ssim"] == 2
    assert summary["metrics"]["ssim"] == pytest.approx((1.0 + rows["fill"]["metrics"]["ssim"]) / 2)
    assert "lpips" in summary["not_computed"]


TIKZ = r"\begin{tikzpicture}\draw[thick] (0,0) rectangle (2,1); \node at (1,0.5) {%s};\end{tikzpicture}"


def test_tikz_gold_perturbation_and_compile_failure(evaluator):
    gold = TIKZ % "Input"
    broken = r"\begin{tikzpicture}\draw (0,0"
    predictions = {"gold": gold, "label": TIKZ % "Output layer", "broken": broken}
    rows, summary = _run(evaluator, "tikz", "tikz", gold, predictions)
    _assert_gold_perfect(rows["gold"], "tikz")
    assert rows["label"]["metrics"]["ssim"] < 1.0
    assert not rows["broken"]["executed"] and summary["execution_rate"] == pytest.approx(2 / 3)


def _mol_code(smiles, literal=True):
    setup = (
        f"mol = Chem.MolFromSmiles({smiles!r})" if literal else f"mol = Chem.MolFromSmiles(''.join({list(smiles)!r}))"
    )
    return ("from rdkit import Chem\nfrom rdkit.Chem import Draw\n" + setup +
            "\nDraw.MolToImage(mol, size=(300, 300)).save('m.png')\n")  # fmt: skip


def test_molecule_gold_static_traced_and_wrong(evaluator):
    gold = _mol_code("c1ccccc1O")
    rows, _ = _run(evaluator, "molecules", "chem", gold, {
        "gold": gold,
        "dynamic": _mol_code("c1ccccc1O", literal=False),  # not readable statically: measured by the trace
        "other": _mol_code("c1ccccc1N"),
        "crash": gold + "raise SystemExit(3)\n",
    })  # fmt: skip
    _assert_gold_perfect(rows["gold"], "chem")
    assert rows["gold"]["molecule"]["source"] == "static"
    assert rows["dynamic"]["molecule"]["source"] == "trace" and rows["dynamic"]["metrics"]["tanimoto"] == 1.0
    assert 0.0 < rows["other"]["metrics"]["tanimoto"] < 1.0 and rows["other"]["metrics"]["validity"] == 1.0
    assert not rows["crash"]["executed"] and rows["crash"]["metrics"]["validity"] == 0.0
