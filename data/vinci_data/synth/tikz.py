"""TikZ drawings (shapes, nodes, arrows) and pgfplots axes (lines, bars, functions) as standalone documents.

Difficulty 0: a few shapes or one plot; 1: labelled nodes and arrows or two plots with legend; 2: more of both,
grids and titles.
"""

from __future__ import annotations

import random

from vinci_data.synth.common import Domain, Spec, edited, words

# xcolor names that exist without extra options (a synthetic colour must always compile).
TIKZ_COLOURS: tuple[str, ...] = (
    "red",
    "blue",
    "green",
    "orange",
    "purple",
    "brown",
    "magenta",
    "cyan",
    "teal",
    "olive",
    "violet",
    "black",
    "gray",
)
FUNCTIONS: tuple[str, ...] = ("x^2", "sin(deg(x))", "exp(-x/2)", "sqrt(x+3)", "2*x+1", "x^3/10", "abs(x)")


def _colour(rng: random.Random) -> str:
    return rng.choice(TIKZ_COLOURS)


def _drawing(rng: random.Random, difficulty: int) -> Spec:
    n = (rng.randint(2, 3), rng.randint(3, 5), rng.randint(5, 7))[difficulty]
    shapes = []
    for _ in range(n):
        kind = rng.choice(("circle", "rectangle", "node", "triangle"))
        shape = {"kind": kind, "x": rng.randint(0, 6), "y": rng.randint(0, 4), "color": _colour(rng)}
        shape["size"] = round(rng.uniform(0.4, 1.2), 1)
        shape["text"] = words(rng, 1)
        shapes.append(shape)
    arrows = []
    if difficulty >= 1:
        for _ in range(rng.randint(1, n - 1)):
            a, b = rng.sample(range(n), 2)
            arrows.append({"from": a, "to": b, "color": _colour(rng)})
    return {"type": "drawing", "shapes": shapes, "arrows": arrows, "grid": difficulty >= 2 and rng.random() < 0.5}


def _plot(rng: random.Random, difficulty: int) -> Spec:
    n_plots = 1 if difficulty == 0 else rng.randint(2, 3)
    plots = []
    for _ in range(n_plots):
        if rng.random() < 0.5:
            plots.append({"kind": "function", "expr": rng.choice(FUNCTIONS), "color": _colour(rng)})
        else:
            points = [[x, rng.randint(1, 20)] for x in range(1, rng.randint(5, 8))]
            plots.append({"kind": "coordinates", "points": points, "color": _colour(rng), "mark": "*"})
    return {
        "type": "plot",
        "plots": plots,
        "ybar": difficulty < 2 and n_plots == 1 and plots[0]["kind"] == "coordinates" and rng.random() < 0.5,
        "title": words(rng, 2) if difficulty >= 1 else "",
        "xlabel": words(rng, 1, capitalize=False),
        "ylabel": words(rng, 1, capitalize=False),
        "legend": [words(rng, 1) for _ in plots] if n_plots > 1 else [],
        "grid": difficulty >= 2,
        "width": rng.choice((7, 8, 9)),
    }


def sample_simple(rng: random.Random) -> Spec:
    """Two shapes without arrows, or one plot (a function, or five points) without title or legend."""
    spec = _drawing(rng, 0) if rng.random() < 0.5 else _plot(rng, 0)
    if spec["type"] == "drawing":
        spec["shapes"] = spec["shapes"][:2]
    else:
        plot = spec["plots"][0]
        if plot["kind"] == "coordinates":
            plot["points"] = [[x, rng.randint(1, 20)] for x in range(1, 6)]
    return spec


def sample(rng: random.Random, difficulty: int) -> Spec:
    return _drawing(rng, difficulty) if rng.random() < 0.5 else _plot(rng, difficulty)


def _drawing_code(spec: Spec) -> list[str]:
    lines = [r"\begin{tikzpicture}"]
    if spec["grid"]:
        lines.append(r"  \draw[gray!30, step=1] (-1,-1) grid (8,6);")
    for i, s in enumerate(spec["shapes"]):
        x, y, r, c = s["x"], s["y"], s["size"], s["color"]
        x2, xm, yr = round(x + 2 * r, 2), round(x + r, 2), round(y + r, 2)
        ym, yt = round(y + r / 2, 2), round(y + 1.5 * r, 2)
        if s["kind"] == "circle":
            lines.append(rf"  \filldraw[fill={c}!60, draw={c}!90!black] ({x},{y}) circle ({r});")
            lines.append(rf"  \coordinate (p{i}) at ({x},{y});")
        elif s["kind"] == "rectangle":
            lines.append(rf"  \filldraw[fill={c}!50, draw={c}] ({x},{y}) rectangle ({x2},{yr});")
            lines.append(rf"  \coordinate (p{i}) at ({xm},{ym});")
        elif s["kind"] == "triangle":
            lines.append(rf"  \fill[{c}] ({x},{y}) -- ({x2},{y}) -- ({xm},{yt}) -- cycle;")
            lines.append(rf"  \coordinate (p{i}) at ({xm},{ym});")
        else:
            lines.append(
                rf"  \node[draw={c}, fill={c}!15, rounded corners, minimum width={round(2 * r + 0.8, 1)}cm] "
                rf"(p{i}) at ({x},{y}) {{{s['text']}}};"
            )
    for a in spec["arrows"]:
        lines.append(rf"  \draw[->, thick, {a['color']}] (p{a['from']}) -- (p{a['to']});")
    lines.append(r"\end{tikzpicture}")
    return lines


def _plot_code(spec: Spec) -> list[str]:
    options = [f"width={spec['width']}cm", "height=6cm", f"xlabel={{{spec['xlabel']}}}", f"ylabel={{{spec['ylabel']}}}"]
    if spec["title"]:
        options.append(f"title={{{spec['title']}}}")
    if spec["ybar"]:
        options += ["ybar", "ymin=0"]
    if spec["grid"]:
        options.append("grid=major")
    if spec["legend"]:
        options.append("legend pos=north west")
    lines = [r"\begin{tikzpicture}", r"\begin{axis}[" + ", ".join(options) + "]"]
    for p in spec["plots"]:
        if p["kind"] == "function":
            lines.append(rf"  \addplot[{p['color']}, thick, domain=-3:3, samples=50] {{{p['expr']}}};")
        else:
            coords = " ".join(f"({x},{y})" for x, y in p["points"])
            style = f"fill={p['color']}!60, draw={p['color']}" if spec["ybar"] else f"{p['color']}, mark={p['mark']}"
            lines.append(rf"  \addplot[{style}] coordinates {{{coords}}};")
    if spec["legend"]:
        lines.append(r"  \legend{" + ",".join(spec["legend"]) + "}")
    lines += [r"\end{axis}", r"\end{tikzpicture}"]
    return lines


def to_code(spec: Spec) -> str:
    """Drawings as full `article` documents, plots as bare tikzpicture snippets: both forms occur in the public data,
    and both hit the renderer's pre-dumped formats (a standalone/pgfplots preamble would be read on every compile)."""
    if spec["type"] == "plot":
        return "\n".join(_plot_code(spec)) + "\n"
    head = [r"\documentclass{article}", r"\usepackage{tikz}", r"\begin{document}"]
    return "\n".join(head + _drawing_code(spec) + [r"\end{document}"]) + "\n"


def _items(spec: Spec) -> list[Spec]:
    return spec["shapes"] if spec["type"] == "drawing" else spec["plots"]


def _wrong_colour(spec: Spec, rng: random.Random) -> str:
    i = rng.randrange(len(_items(spec)))

    def edit(s: Spec) -> None:
        item = _items(s)[i]
        item["color"] = rng.choice([c for c in TIKZ_COLOURS if c != item["color"]])

    return to_code(edited(spec, edit))


def _wrong_size(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if s["type"] == "drawing":
            shape = rng.choice(s["shapes"])
            shape["size"] = round(shape["size"] * rng.choice((0.4, 2.0)), 1)
        else:
            s["width"] = s["width"] + rng.choice((-3, 4))

    return to_code(edited(spec, edit))


def _wrong_position(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if s["type"] == "drawing":
            shape = rng.choice(s["shapes"])
            shape["x"] += rng.choice((-3, 3))
            shape["y"] += rng.choice((-2, 2))
        else:
            plot = rng.choice(s["plots"])
            if plot["kind"] == "function":
                plot["expr"] = f"({plot['expr']})+3"
            else:
                plot["points"] = [[x, y + 6] for x, y in plot["points"]]

    return to_code(edited(spec, edit))


def _missing_element(spec: Spec, rng: random.Random) -> str | None:
    if spec["type"] == "plot" and spec["title"]:
        return to_code(edited(spec, lambda s: s.update(title="")))
    items = _items(spec)
    if len(items) < 2:
        return None
    i = rng.randrange(len(items))

    def edit(s: Spec) -> None:
        _items(s).pop(i)
        if s["type"] == "drawing":
            s["arrows"] = [
                {**a, "from": a["from"] - (a["from"] > i), "to": a["to"] - (a["to"] > i)}
                for a in s["arrows"]
                if i not in (a["from"], a["to"])
            ]
        elif s["legend"]:
            s["legend"].pop(i)

    return to_code(edited(spec, edit))


def _wrong_chart_type(spec: Spec, rng: random.Random) -> str | None:
    if spec["type"] != "plot" or len(spec["plots"]) != 1 or spec["plots"][0]["kind"] != "coordinates":
        return None
    return to_code(edited(spec, lambda s: s.update(ybar=not s["ybar"])))


def _compile_error(spec: Spec, rng: random.Random) -> str:
    """An undefined control sequence: pdflatex stops, the render fails."""
    code = to_code(spec)
    return code.replace(r"\begin{tikzpicture}", r"\begin{tikzpicture}" + "\n  \\drawshape[thick] (0,0);", 1)


MUTATIONS = {
    "wrong_colour": _wrong_colour,
    "wrong_size": _wrong_size,
    "wrong_position": _wrong_position,
    "missing_element": _missing_element,
    "wrong_chart_type": _wrong_chart_type,
    "compile_error": _compile_error,
}

DOMAIN = Domain(
    name="tikz",
    language="latex",
    language_phrase="TikZ/LaTeX",
    render_options={},  # renderer defaults (300 dpi)
    sample=sample,
    to_code=to_code,
    mutations=MUTATIONS,
    sample_simple=sample_simple,
    generate_prompts=(
        "Write TikZ code in a LaTeX document that reproduces this figure.",
        "Generate the LaTeX (TikZ/pgfplots) code for the figure above.",
        "Convert this image into compilable TikZ/LaTeX code.",
    ),
)
