"""Metric building blocks on hand-made inputs: CIEDE2000, assignment, SSIM, molecules, Design2Code blocks."""

import pytest
from PIL import Image, ImageDraw

from vinci_jax.evaluate.chart_metrics import chartmimic_scores, text_match
from vinci_jax.evaluate.colors import ciede2000, color_similarity, parse_color
from vinci_jax.evaluate.design_metrics import design2code_scores
from vinci_jax.evaluate.image_metrics import ssim
from vinci_jax.evaluate.matching import assign
from vinci_jax.evaluate.molecule_metrics import drawn_smiles, molecule_scores, static_smiles


def test_ciede2000_matches_sharma_reference_pairs():
    # pairs 1, 7 and 17 of the test data in Sharma, Wu & Dalal (2005), Table 1
    assert ciede2000((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485)) == pytest.approx(2.0425, abs=1e-4)
    assert ciede2000((50.0, 0.0, 0.0), (50.0, -1.0, 2.0)) == pytest.approx(2.3669, abs=1e-4)
    assert ciede2000((50.0, 2.5, 0.0), (73.0, 25.0, -18.0)) == pytest.approx(27.1492, abs=1e-4)


def test_colour_parsing_and_similarity_order():
    assert parse_color("rgb(255, 0, 0)") == parse_color("#ff0000") == parse_color("#f00") == (255, 0, 0)
    assert color_similarity("#ff0000", "rgb(255, 0, 0)") == 1.0
    near, far = color_similarity("#ff0000", "#ee1111"), color_similarity("#ff0000", "#0000ff")
    assert 1.0 > near > far > 0.0
    assert color_similarity("#000000", "#ffffff") == 0.0


def test_assignment_maximises_total_similarity():
    same = lambda a, b: float(a == b)  # noqa: E731
    assert sorted(assign([1, 2], [2, 1], same)) == [(0, 1, 1.0), (1, 0, 1.0)]
    assert assign([], [1], same) == []


def _trace(texts=("Title",), layout=((1, 1, 0, 0, 0, 0),), types=None, colors=(("line", "#FF0000"),)):
    return {"texts": list(texts), "layout": [list(v) for v in layout], "types": types or {"Axes.plot": 1},
            "colors": [list(c) for c in colors], "num_axes": len(layout)}  # fmt: skip


def _p2c(texts=(("title", 0.5, 1.0),)):
    return {"texts": [list(t) for t in texts], "size_inches": [6.4, 4.8]}


def test_chartmimic_components_move_independently():
    gold = _trace()
    assert chartmimic_scores(gold, _trace())["low_level"] == 1.0
    recoloured = chartmimic_scores(gold, _trace(colors=(("line", "#00FF00"),)))
    assert recoloured["color_f1"] < 1.0 and recoloured["text_f1"] == recoloured["layout_f1"] == 1.0
    retyped = chartmimic_scores(gold, _trace(types={"Axes.bar": 1}))
    assert retyped["type_f1"] == 0.0 and retyped["color_f1"] == 1.0
    relaid = chartmimic_scores(gold, _trace(layout=((1, 2, 0, 0, 0, 0),)))
    assert relaid["layout_f1"] == 0.0 and relaid["text_f1"] == relaid["type_f1"] == relaid["color_f1"] == 1.0
    assert text_match(_p2c(), _p2c()) == 1.0
    assert text_match(_p2c(), _p2c(texts=(("title", 40.0, 1.0),))) == 0.0  # right string, out of the radius


def test_ssim_identical_and_perturbed():
    a = Image.new("RGB", (200, 150), "white")
    ImageDraw.Draw(a).rectangle((20, 20, 120, 100), fill="navy")
    b = a.copy()
    ImageDraw.Draw(b).ellipse((130, 30, 190, 90), fill="orange")
    assert ssim(a, a.copy()) == 1.0
    assert 0.0 < ssim(a, b) < 0.99


def test_static_smiles_reads_literals_and_names_without_running():
    assert static_smiles("from rdkit import Chem\nm = Chem.MolFromSmiles('CCO')\n") == "CCO"
    assert static_smiles("s = 'c1ccccc1'\nfrom rdkit import Chem\nm = Chem.MolFromSmiles(s)\n") == "c1ccccc1"
    assert static_smiles("import os\nm = Chem.MolFromSmiles(os.environ['X'])\n") is None  # dynamic
    assert static_smiles("Chem.MolFromSmiles('CCO'); Chem.MolFromSmiles('CCN')") is None  # ambiguous
    assert drawn_smiles("x = 1", {"rdkit": {"drawn": ["CCN"], "parsed": []}}) == ("CCN", "trace")


def test_molecule_scores():
    assert molecule_scores("OCC", "CCO") == {"validity": 1.0, "tanimoto": 1.0}
    other = molecule_scores("c1ccccc1O", "c1ccccc1N")
    assert other["validity"] == 1.0 and 0.0 < other["tanimoto"] < 1.0
    assert molecule_scores("CCO", "C1CC") == {"validity": 0.0, "tanimoto": 0.0}  # unclosed ring


def _block(text, x=0.1, y=0.1, color="rgb(0, 0, 0)"):
    return {"text": text, "x": x, "y": y, "w": 0.2, "h": 0.05, "color": color}


def test_design2code_components():
    gold = {"blocks": [_block("Welcome home"), _block("Contact us", y=0.5)]}
    assert design2code_scores(gold, gold) == {"block_match": 1.0, "text": 1.0, "position": 1.0, "color": 1.0}
    recoloured = design2code_scores(gold, {"blocks": [_block("Welcome home", color="rgb(255,0,0)"),
                                                      _block("Contact us", y=0.5)]})  # fmt: skip
    assert recoloured["color"] < 1.0 and recoloured["text"] == recoloured["position"] == 1.0
    moved = design2code_scores(gold, {"blocks": [_block("Welcome home", x=0.6), _block("Contact us", y=0.5)]})
    assert moved["position"] < 1.0 and moved["text"] == 1.0
    missing = design2code_scores(gold, {"blocks": [_block("Welcome home")]})
    assert missing["block_match"] == pytest.approx(2 / 3) and missing["text"] == 1.0
    assert design2code_scores(gold, {"blocks": [_block("WELCOME HOME"), _block("Contact us", y=0.5)]})["text"] == 1.0
