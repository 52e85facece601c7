"""Each metric against values worked out by hand from the official evaluator's definition (ChartMimic, Plot2Code,
Design2Code, UniSVG / scikit-image). Pure functions on hand-written records; the traced runs that produce such
records are checked in test_evaluate_official_traces.py."""

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from renderers.trace_html import blocks_from_screenshots
from vinci_jax.evaluate.chart_metrics import chartmimic_scores, color_f1, filter_colors, text_match, type_f1
from vinci_jax.evaluate.design_metrics import design2code_scores
from vinci_jax.evaluate.image_metrics import prepare, ssim, ssim_arrays


def _record(texts=(), layout=(), types=None, colors=(), num_axes=0):
    return {"texts": list(texts), "layout": [list(x) for x in layout], "types": dict(types or {}),
            "colors": [list(c) for c in colors], "num_axes": num_axes}  # fmt: skip


def test_chartmimic_text_is_a_case_sensitive_multiset_and_empty_scores_zero():
    gold = _record(texts=["Title", "A", "A"])
    scores = chartmimic_scores(gold, _record(texts=["A", "title"]))
    assert scores["text_f1"] == pytest.approx(0.4)  # one hit: P 1/2, R 1/3
    assert chartmimic_scores(_record(), _record())["text_f1"] == 0.0  # TextEvaluator: either side empty -> 0


def test_chartmimic_type_counts_and_the_stale_score_bug_corrected():
    gold = {"bar": 2, "plot": 1}
    assert type_f1(gold, {"bar": 1, "scatter": 1}) == pytest.approx(0.4)  # min(1, 2) hits: P 1/2, R 1/3
    assert type_f1(gold, {"bar": 2, "plot": 1}) == 1.0
    # upstream returns early and keeps the previous sample's scores when the prediction calls nothing
    assert type_f1(gold, {}) == 0.0 and type_f1({}, {"bar": 1}) == 0.0


def test_chartmimic_colours_group_by_callable_and_compare_colormaps_by_name():
    gold = [("bar", "#FF0000"), ("bar", "#0000FF"), ("line", "#00FF00")]
    assert color_f1(gold, [("bar", "#FF0000"), ("line", "#00FF00")]) == pytest.approx(0.8)  # sum 2: P 1, R 2/3
    # the same green drawn by another callable is not a match: sum 1, P 1/2, R 1/3
    assert color_f1(gold, [("bar", "#FF0000"), ("scatter", "#00FF00")]) == pytest.approx(0.4)
    assert color_f1([("imshow", "viridis")], [("imshow", "viridis")]) == 1.0
    assert color_f1([("imshow", "viridis")], [("imshow", "plasma")]) == 0.0
    assert color_f1([("imshow", "viridis")], [("imshow", "#440154")]) == 0.0  # a colour against a colormap
    assert color_f1([], [("bar", "#FF0000")]) == color_f1([("bar", "#FF0000")], []) == 0.0


def test_chartmimic_colour_filter_applies_above_ten_entries_only():
    names = ["viridis", "plasma", "inferno", "magma", "cividis", "Greys", "Blues", "Reds", "Greens", "Oranges"]
    eleven = [("imshow", n) for n in names] + [("contour", "viridis")]  # the last is 1.0 similar to the first
    assert filter_colors(eleven) == [("imshow", n) for n in names]
    assert color_f1(eleven, [("contour", "viridis")]) == 0.0  # filtered away on the gold side
    ten = [("imshow", n) for n in names[:9]] + [("contour", "viridis")]
    assert color_f1(ten, [("contour", "viridis")]) == pytest.approx(2 * 0.1 / 1.1)  # P 1, R 1/10


def test_chartmimic_layout_and_graph_category():
    gold = _record(layout=[(1, 2, 0, 0, 0, 0), (1, 2, 0, 0, 1, 1)], num_axes=2)
    one = _record(layout=[(1, 1, 0, 0, 0, 0)], num_axes=1)
    assert chartmimic_scores(gold, gold)["layout_f1"] == 1.0
    assert chartmimic_scores(gold, one)["layout_f1"] == 0.0
    # graph charts compare one fixed placement per axes: 1 of 2 axes
    assert chartmimic_scores(gold, one, graph=True)["layout_f1"] == pytest.approx(2 / 3)
    assert chartmimic_scores(gold, _record())["layout_f1"] == 0.0


def test_plot2code_text_match_formula_radius_and_size_ratio():
    gold = {"texts": [["title", 0.5, 1.0], ["a", 0.0, 0.0], ["b", 1.0, 0.0]], "size_inches": [6.4, 4.8]}
    pred = {"texts": [["title", 0.5, 1.0], ["a", 30.0, 0.0], ["b", 1.0, 0.0], ["extra", 0.0, 0.0]],
            "size_inches": [6.4, 4.8]}  # fmt: skip
    assert text_match(gold, pred) == pytest.approx(2 / (3 + 4 - 2))  # "a" is 30 away: exp(-0.3) < 0.8
    near = {"texts": [["a", 22.0, 0.0]], "size_inches": [6.4, 4.8]}
    far = {"texts": [["a", 23.0, 0.0]], "size_inches": [6.4, 4.8]}
    only_a = {"texts": [["a", 0.0, 0.0]], "size_inches": [6.4, 4.8]}
    assert text_match(only_a, near) == 1.0 and text_match(only_a, far) == 0.0  # radius 100 ln 1.25 = 22.3
    # positions of the prediction scale by gold size / predicted size (here 2): 12 -> 24, outside the radius
    small = {"texts": [["a", 12.0, 0.0]], "size_inches": [3.2, 2.4]}
    assert text_match(only_a, small) == 0.0 and text_match(only_a, {**small, "size_inches": [6.4, 4.8]}) == 1.0
    assert text_match({"texts": [], "size_inches": [1, 1]}, {"texts": [], "size_inches": [1, 1]}) == 1.0
    assert text_match(only_a, {"texts": [["a", None, 0.0]], "size_inches": [6.4, 4.8]}) == 0.0


def _page(*blocks):
    return {"blocks": [{"text": t, "x": x, "y": y, "w": w, "h": h, "color": c} for t, x, y, w, h, c in blocks]}


def test_design2code_lower_cases_and_merges_neighbours():
    gold = _page(("Hello World", 0.0, 0.0, 0.5, 0.1, "rgb(0, 0, 0)"))
    same = design2code_scores(gold, _page(("hello world", 0.0, 0.0, 0.5, 0.1, "rgb(0, 0, 0)")))
    assert same == {"block_match": 1.0, "text": 1.0, "position": 1.0, "color": 1.0}
    # two predicted blocks: merging them raises the matched similarity from 0.625 to 1 (> 0.05), so they merge
    split = _page(("hello", 0.0, 0.0, 0.2, 0.1, "rgb(0, 0, 0)"), ("world", 0.25, 0.0, 0.25, 0.1, "rgb(0, 0, 0)"))
    merged = design2code_scores(gold, split)
    assert merged["text"] == pytest.approx(1.0) and merged["block_match"] == pytest.approx(1.0)
    assert merged["position"] == pytest.approx(1.0)


def test_design2code_blocks_sharing_a_box_merge_and_empty_pages_score_zero():
    box = (0.1, 0.1, 0.3, 0.05)
    gold = _page(("first", *box, "#000000"), ("second", *box, "#000000"))
    scores = design2code_scores(gold, _page(("first second", *box, "#000000")))
    assert scores["text"] == 1.0 and scores["block_match"] == 1.0
    zeros = dict.fromkeys(("block_match", "text", "position", "color"), 0.0)
    assert design2code_scores(_page(), _page()) == zeros and design2code_scores(gold, _page()) == zeros
    moved = design2code_scores(gold, _page(("first second", 0.3, 0.1, 0.3, 0.05, "#000000")))
    assert moved["position"] == pytest.approx(1 - 0.2) and moved["text"] == 1.0


def test_design2code_unmatched_area_and_colour():
    gold = _page(("alpha", 0.0, 0.0, 0.2, 0.1, "#000000"), ("omega", 0.0, 0.5, 0.2, 0.1, "#000000"))
    pred = _page(("alpha", 0.0, 0.0, 0.2, 0.1, "#ffffff"))
    scores = design2code_scores(gold, pred)
    assert scores["block_match"] == pytest.approx(0.04 / 0.06)  # matched 0.02 + 0.02 of 0.06
    assert scores["color"] == 0.0 and scores["text"] == 1.0  # black against white: dE00 100


def test_design2code_blocks_from_changed_pixels_of_each_colour():
    original = np.full((10, 20, 3), 255, np.int16)
    first, shifted = original.copy(), original.copy()
    original[2:4, 5:8] = (20, 30, 40)  # the page's own text colour
    first[2:4, 5:8] = (250, 250, 250)  # probe colour of the element
    shifted[2:4, 5:8] = (44, 44, 44)  # the same + 50 mod 256
    first[6, 1] = (250, 250, 250)  # a pixel of that colour that does not change: not the element's
    blocks = blocks_from_screenshots(original, first, shifted, [["Hi", [250, 250, 250]], ["gone", [10, 10, 10]]])
    assert blocks == [{"text": "Hi", "x": 5 / 20, "y": 2 / 10, "w": 3 / 20, "h": 2 / 10, "color": "rgb(20, 30, 40)"}]
    assert blocks_from_screenshots(original, first, original, [["Hi", [250, 250, 250]]]) == []  # nothing changed


def _picture(shift: int, mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, (120, 90), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((10 + shift, 10, 60 + shift, 50), fill=(200, 30, 30))
    draw.ellipse((50, 30 + shift, 100, 80 + shift), fill=(20, 40, 220))
    draw.line((0, 85, 119, 5), fill=(0, 120, 0), width=3)
    return img


def test_ssim_matches_scikit_image_defaults():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a, b = prepare(_picture(0)), prepare(_picture(7))
    expected = skimage_metrics.structural_similarity(a, b, channel_axis=-1, data_range=255)
    assert ssim(_picture(0), _picture(7)) == pytest.approx(expected, abs=1e-6)
    gray_a, gray_b = a[..., 0], b[..., 0]
    assert ssim_arrays(gray_a, gray_b) == pytest.approx(skimage_metrics.structural_similarity(gray_a, gray_b), abs=1e-6)
    assert ssim(_picture(0), _picture(0)) == pytest.approx(1.0)
    # a transparent background is white, as the renders are
    clear = _picture(0, "RGBA")
    clear.putalpha(Image.new("L", clear.size, 255))
    assert ssim(clear, _picture(0)) == pytest.approx(1.0)


def test_ssim_window_is_uniform_not_gaussian():
    """A single bright pixel on flat grey: the uniform window spreads it evenly over 7x7 means."""
    x = np.full((21, 21), 100, np.uint8)
    y = x.copy()
    y[10, 10] = 200
    skimage_metrics = pytest.importorskip("skimage.metrics")
    assert ssim_arrays(x, y) == pytest.approx(skimage_metrics.structural_similarity(x, y), abs=1e-9)
    assert not math.isclose(ssim_arrays(x, y), 1.0)
