"""SVG drawings: rectangles, circles, ellipses, lines, polygons, bezier paths, text and linear gradients.

Difficulty sets the number of shapes (2-3, 4-6, 7-10) and unlocks gradients and curved paths.
"""

from __future__ import annotations

import random

from vinci_data.synth.common import LIGHT, PALETTE, Domain, Spec, colours, edited, other_colour, words

SIZE = 336


def _shape(rng: random.Random, kind: str, colour: str, gradient: bool) -> Spec:
    x, y = rng.randint(30, SIZE - 110), rng.randint(30, SIZE - 110)
    shape: Spec = {"kind": kind, "fill": colour, "gradient": gradient, "x": x, "y": y}
    if kind == "rect":
        shape.update(w=rng.randint(40, 100), h=rng.randint(30, 90), rx=rng.choice((0, 0, 6, 12)))
    elif kind == "circle":
        shape.update(r=rng.randint(18, 50), x=x + 50, y=y + 50)
    elif kind == "ellipse":
        shape.update(rx=rng.randint(25, 60), ry=rng.randint(12, 35), x=x + 55, y=y + 40)
    elif kind == "line":
        shape.update(x2=rng.randint(30, SIZE - 30), y2=rng.randint(30, SIZE - 30), width=rng.randint(3, 8))
    elif kind == "polygon":
        n = rng.randint(3, 6)
        shape["points"] = [[x + rng.randint(0, 100), y + rng.randint(0, 100)] for _ in range(n)]
    elif kind == "path":
        shape.update(
            cx=rng.randint(20, SIZE - 20),
            cy=rng.randint(20, SIZE - 20),
            x2=rng.randint(60, SIZE - 20),
            y2=rng.randint(60, SIZE - 20),
            width=rng.randint(3, 7),
        )
    elif kind == "text":
        shape.update(text=words(rng, rng.randint(1, 2)), size=rng.randint(18, 30), y=y + 40)
    return shape


def sample(rng: random.Random, difficulty: int) -> Spec:
    n = (rng.randint(2, 3), rng.randint(4, 6), rng.randint(7, 10))[difficulty]
    kinds = ["rect", "circle", "ellipse", "line", "polygon", "text"] + (["path"] if difficulty > 0 else [])
    cols = colours(rng, min(n, 15))
    shapes = []
    for i in range(n):
        kind = rng.choice(kinds)
        gradient = difficulty >= 1 and kind in ("rect", "circle", "ellipse") and rng.random() < 0.3
        shapes.append(_shape(rng, kind, cols[i % len(cols)], gradient))
    return {"background": rng.choice(LIGHT), "shapes": shapes, "gradient_to": rng.choice(sorted(PALETTE))}


def sample_simple(rng: random.Random) -> Spec:
    """Exactly two filled shapes or lines (no polygons, whose point lists vary, no text, no gradients)."""
    cols = colours(rng, 2)
    shapes = [_shape(rng, rng.choice(("rect", "circle", "ellipse", "line")), c, False) for c in cols]
    return {"background": rng.choice(LIGHT), "shapes": shapes, "gradient_to": cols[0]}


def _element(s: Spec, i: int) -> str:
    fill = f"url(#grad{i})" if s["gradient"] else PALETTE[s["fill"]]
    k = s["kind"]
    if k == "rect":
        return f'<rect x="{s["x"]}" y="{s["y"]}" width="{s["w"]}" height="{s["h"]}" rx="{s["rx"]}" fill="{fill}"/>'
    if k == "circle":
        return f'<circle cx="{s["x"]}" cy="{s["y"]}" r="{s["r"]}" fill="{fill}"/>'
    if k == "ellipse":
        return f'<ellipse cx="{s["x"]}" cy="{s["y"]}" rx="{s["rx"]}" ry="{s["ry"]}" fill="{fill}"/>'
    if k == "line":
        return (
            f'<line x1="{s["x"]}" y1="{s["y"]}" x2="{s["x2"]}" y2="{s["y2"]}" stroke="{fill}" '
            f'stroke-width="{s["width"]}" stroke-linecap="round"/>'
        )
    if k == "polygon":
        points = " ".join(f"{px},{py}" for px, py in s["points"])
        return f'<polygon points="{points}" fill="{fill}"/>'
    if k == "path":
        d = f"M {s['x']} {s['y']} Q {s['cx']} {s['cy']} {s['x2']} {s['y2']}"
        return f'<path d="{d}" fill="none" stroke="{fill}" stroke-width="{s["width"]}"/>'
    if k == "text":
        return (
            f'<text x="{s["x"]}" y="{s["y"]}" font-family="DejaVu Sans" font-size="{s["size"]}" '
            f'fill="{fill}">{s["text"]}</text>'
        )
    raise ValueError(f"unknown SVG shape kind {k!r}")


def to_code(spec: Spec) -> str:
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}">']
    grads = [(i, s) for i, s in enumerate(spec["shapes"]) if s["gradient"]]
    if grads:
        lines.append("  <defs>")
        for i, s in grads:
            lines += [
                f'    <linearGradient id="grad{i}" x1="0" y1="0" x2="1" y2="1">',
                f'      <stop offset="0%" stop-color="{PALETTE[s["fill"]]}"/>',
                f'      <stop offset="100%" stop-color="{PALETTE[spec["gradient_to"]]}"/>',
                "    </linearGradient>",
            ]
        lines.append("  </defs>")
    lines.append(f'  <rect width="{SIZE}" height="{SIZE}" fill="{spec["background"]}"/>')
    lines += ["  " + _element(s, i) for i, s in enumerate(spec["shapes"])]
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def _pick(rng: random.Random, spec: Spec) -> int:
    return rng.randrange(len(spec["shapes"]))


def _wrong_colour(spec: Spec, rng: random.Random) -> str:
    i = _pick(rng, spec)

    def edit(s: Spec) -> None:
        s["shapes"][i]["fill"] = other_colour(rng, s["shapes"][i]["fill"])
        s["shapes"][i]["gradient"] = False

    return to_code(edited(spec, edit))


def _wrong_size(spec: Spec, rng: random.Random) -> str:
    i = _pick(rng, spec)
    factor = rng.choice((0.5, 1.6))

    def edit(s: Spec) -> None:
        shape = s["shapes"][i]
        for key in ("w", "h", "r", "rx", "ry", "size", "width"):
            if key in shape and shape[key]:
                shape[key] = max(2, int(shape[key] * factor))
        if shape["kind"] == "polygon":
            x0, y0 = shape["points"][0]
            shape["points"] = [
                [x0 + int((px - x0) * factor), y0 + int((py - y0) * factor)] for px, py in shape["points"]
            ]

    return to_code(edited(spec, edit))


def _wrong_position(spec: Spec, rng: random.Random) -> str:
    i = _pick(rng, spec)
    dx, dy = rng.choice((-1, 1)) * rng.randint(40, 80), rng.choice((-1, 1)) * rng.randint(40, 80)

    def edit(s: Spec) -> None:
        shape = s["shapes"][i]
        shape["x"] += dx
        shape["y"] += dy
        if shape["kind"] == "polygon":
            shape["points"] = [[px + dx, py + dy] for px, py in shape["points"]]

    return to_code(edited(spec, edit))


def _missing_element(spec: Spec, rng: random.Random) -> str | None:
    if len(spec["shapes"]) < 2:
        return None
    i = _pick(rng, spec)
    return to_code(edited(spec, lambda s: s["shapes"].pop(i)))


def _broken_markup(spec: Spec, rng: random.Random) -> str:
    """Unclosed tag: the XML does not parse, so the render fails."""
    code = to_code(spec)
    return code.replace("/>", ">", 1)


MUTATIONS = {
    "wrong_colour": _wrong_colour,
    "wrong_size": _wrong_size,
    "wrong_position": _wrong_position,
    "missing_element": _missing_element,
    "broken_markup": _broken_markup,
}

DOMAIN = Domain(
    name="svg",
    language="svg",
    language_phrase="SVG",
    render_options={},  # renderer defaults: SIZE is the SVG renderer's default output size
    sample=sample,
    to_code=to_code,
    mutations=MUTATIONS,
    sample_simple=sample_simple,
    generate_prompts=(
        "Write the SVG code that draws this image.",
        "Convert the picture into SVG code.",
        "Generate SVG code that reproduces the graphic above as closely as possible.",
    ),
)
