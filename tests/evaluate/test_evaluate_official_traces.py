"""Traced runs record what the official evaluators log: hand-written charts and pages run in the sandboxed trace
workers (real matplotlib, real Chromium), each asserting the record and score that the official definition gives."""

import pytest

from renderers.trace_run import TracePool
from vinci_jax.evaluate.chart_metrics import chartmimic_scores, text_match
from vinci_jax.evaluate.design_metrics import blocks_from_trace, merge_by_bbox

HEAD = "import matplotlib.pyplot as plt\nimport numpy as np\nfig, ax = plt.subplots()\n"
AXES = "matplotlib.axes.Axes."


@pytest.fixture(scope="module")
def pool():
    with TracePool(1, timeout_s=20.0) as p:
        yield p


def _records(pool, code):
    result = pool.trace(code, "python", ["matplotlib"])
    trace = result.trace["matplotlib"]
    return result, trace["chartmimic"], trace["plot2code"]


def test_ticks_removed_lines_split_and_plot2code_keeps_ticks_lower_cased(pool):
    code = HEAD + (
        "ax.plot([1, 2, 3], [4, 5, 6], color='red')\nax.set_title('Sales\\nBy Year')\nax.set_xlabel('Year')\n"
        "ax.legend(['Revenue'])\nplt.savefig('out.png')\n"
    )
    result, cm, p2c = _records(pool, code)
    assert result.ok
    assert sorted(cm["texts"]) == ["By Year", "Revenue", "Sales", "Year"]  # each drawn line, no tick label
    assert cm["types"] == {AXES + "plot": 1} and cm["colors"] == [["line", "#FF0000"]]
    assert cm["layout"] == [[1, 1, 0, 0, 0, 0]] and cm["frozen_at"] == "savefig"
    strings = [t for t, _, _ in p2c["texts"]]
    assert "sales\nby year" in strings and "year" in strings and "revenue" in strings
    assert "1.00" in strings and strings == [s.lower() for s in strings]  # tick labels count for Plot2Code
    assert p2c["size_inches"] == [6.4, 4.8]


def test_upper_case_text_matters_to_chartmimic_not_to_plot2code(pool):
    line = "ax.bar([0, 1], [1, 2], color='tab:blue')\nax.set_title('{}')\nplt.savefig('out.png')\n"
    _, gold_cm, gold_p2c = _records(pool, HEAD + line.format("Sales"))
    _, pred_cm, pred_p2c = _records(pool, HEAD + line.format("SALES"))
    assert chartmimic_scores(gold_cm, pred_cm)["text_f1"] == 0.0
    assert text_match(gold_p2c, pred_p2c) == 1.0


def test_same_colour_bars_colormaps_and_colorbar(pool):
    code = (
        "import matplotlib.pyplot as plt\nimport numpy as np\nfig, (a, b) = plt.subplots(1, 2)\n"
        "a.bar(['x', 'y', 'z'], [1, 2, 3], color='tab:blue')\nim = b.imshow(np.eye(4), cmap='magma')\n"
        "b.scatter([0, 1], [0, 1], c=[0, 1], cmap='viridis')\nfig.colorbar(im, ax=b)\nplt.show()\n"
    )
    _, cm, _ = _records(pool, code)
    # three bars of one colour: one pair; colormaps by name; the colorbar's pcolormesh is not a traced type
    assert cm["colors"] == [["bar", "#1F77B4"], ["imshow", "magma"], ["scatter", "viridis"]]
    assert cm["types"] == {AXES + "bar": 1, AXES + "imshow": 1, AXES + "scatter": 1}


def test_nested_calls_count_once_and_patch_constructors_count(pool):
    code = HEAD + (
        "ax.hist([1, 2, 2, 3], color='purple')\nax.barh([0], [1])\n"
        "ax.add_patch(plt.Circle((0, 0), 0.1, color='orange'))\n"
        "ax.errorbar([1, 2], [1, 2], yerr=0.1, color='k')\nplt.show()\n"
    )
    _, cm, _ = _records(pool, code)
    # types: hist's bars, barh's bar, Circle's Ellipse.__init__, errorbar's lines are inside traced calls; colours:
    # errorbar is not a traced colour callable, so its data line and its vlines are recorded
    assert cm["types"] == {AXES + "hist": 1, AXES + "barh": 1, "matplotlib.patches.__init__": 1, AXES + "errorbar": 1}
    assert cm["colors"] == [["hist", "#800080"], ["bar", "#1F77B4"], ["patches.__init__", "#FFA500"],
                            ["line", "#000000"], ["vlines", "#000000"]]  # fmt: skip


def test_runtime_error_halfway_is_scored_on_what_was_drawn(pool):
    start = HEAD + "ax.bar([0, 1], [1, 2], color='green')\nax.set_title('Before')\n"
    gold = start + "ax.plot([0, 1], [2, 1], color='black')\nax.set_xlabel('X')\nplt.savefig('out.png')\n"
    result, pred_cm, _ = _records(pool, start + "undefined_name\nax.set_xlabel('X')\nplt.savefig('out.png')\n")
    assert result.status == "error" and "NameError" in result.error
    assert pred_cm["texts"] == ["Before"] and pred_cm["types"] == {AXES + "bar": 1}
    _, gold_cm, _ = _records(pool, gold)
    scores = chartmimic_scores(gold_cm, pred_cm)
    # text 1 of 2, type 1 of 2, colour 1 of 2 (P 1, R 1/2 -> 2/3 each), same layout
    assert scores["text_f1"] == scores["type_f1"] == scores["color_f1"] == pytest.approx(2 / 3)
    assert scores["layout_f1"] == 1.0 and scores["low_level"] == pytest.approx(0.75)


def test_record_frozen_at_first_savefig_and_picture_keeps_its_ticks(pool):
    code = HEAD + "ax.set_title('Saved')\nplt.savefig('a.png')\nax.set_title('Later')\nax.bar([0], [1])\n"
    _, cm, p2c = _records(pool, code)
    assert cm["texts"] == ["Saved"] and cm["types"] == {} and cm["frozen_at"] == "savefig"
    assert "later" in [t for t, _, _ in p2c["texts"]]  # Plot2Code runs the whole code
    shown = pool.trace(HEAD + "ax.plot([1, 2], [3, 4])\nplt.show()\n", "python", ["matplotlib"])
    saved_then_shown = pool.trace(HEAD + "ax.plot([1, 2], [3, 4])\nplt.savefig('a.png')\nplt.show()\n", "python",
                                  ["matplotlib"])  # fmt: skip
    assert shown.ok and saved_then_shown.ok and shown.image().tobytes() == saved_then_shown.image().tobytes()


PAGE = """<html><body>
<div>Outer <strong>Bold</strong> Tail<p>Inner Para</p></div>
<section><em style="color: red">Dropped</em> Loose</section>
<span style="display: none">Hidden</span>
<ul><li>Item <b>One</b></li></ul>
</body></html>"""


def test_design2code_blocks_follow_text_tag_elements(pool):
    result = pool.trace(PAGE, "html", ["html"])
    assert result.ok
    items = blocks_from_trace(result.trace["html"])
    # one item per text node, boxed by its text-tag element's colour: nested non-text-tag nodes share the box, so
    # the box merge joins them; no text tag, an inline colour on the way, or nothing drawn: no block; lower-cased
    assert [b["text"] for b in items] == ["outer", "bold", "tail", "inner para", "item", "one"]
    blocks = merge_by_bbox(items)
    assert [b["text"] for b in blocks] == ["outer bold tail", "inner para", "item", "one"]
    assert all(0 <= b["bbox"][0] <= 1 and b["bbox"][2] > 0 for b in blocks)
    assert all(max(b["color"]) < 40 for b in blocks)  # black text: the page's own pixels, not the probe colours
