"""HTML/CSS pages: a header, then blocks laid out as a flex row, a CSS grid or stacked sections, with text and colours.

Difficulty 0: header + 2-3 blocks; 1: nav bar and 3-4 blocks with paragraphs; 2: grid of up to 6 cards with buttons
and a footer.
"""

from __future__ import annotations

import random

from vinci_data.synth.common import LIGHT, PALETTE, Domain, Spec, colours, edited, other_colour, truncate_lines, words

WIDTH, HEIGHT = 1280, 720  # renderers.lang_html's default viewport, which ViRL rollouts are rendered at
LAYOUTS: tuple[str, ...] = ("flex", "grid", "stack")
FONTS: tuple[str, ...] = ("Arial, sans-serif", "Georgia, serif", "Verdana, sans-serif", "Courier New, monospace")


def sample(rng: random.Random, difficulty: int) -> Spec:
    n_blocks = (rng.randint(2, 3), rng.randint(3, 4), rng.randint(4, 6))[difficulty]
    cols = colours(rng, n_blocks + 2)
    blocks = [
        {
            "title": words(rng, rng.randint(1, 2)),
            "text": words(rng, rng.randint(4, 9)).lower() + "." if difficulty > 0 else "",
            "color": cols[i + 2],
            "button": difficulty >= 2 and rng.random() < 0.5,
        }
        for i in range(n_blocks)
    ]
    return {
        "background": rng.choice(LIGHT),
        "header_color": cols[0],
        "header_text": words(rng, rng.randint(2, 3)),
        "header_size": rng.choice((24, 28, 32)),
        "nav": [words(rng, 1) for _ in range(rng.randint(3, 4))] if difficulty >= 1 else [],
        "accent": cols[1],
        "layout": rng.choice(LAYOUTS) if difficulty > 0 else rng.choice(("flex", "stack")),
        "columns": rng.choice((2, 3)),
        "blocks": blocks,
        "font": rng.choice(FONTS),
        "radius": rng.choice((0, 6, 12)),
        "padding": rng.choice((10, 14, 18)),
        "footer": words(rng, 3) if difficulty >= 2 else "",
        "align": rng.choice(("left", "center")),
    }


def sample_simple(rng: random.Random) -> Spec:
    """A header and exactly two coloured blocks in a row or a stack; only the CSS rules the page uses."""
    spec = sample(rng, 0)
    spec["blocks"] = spec["blocks"][:2]
    spec["compact"] = True
    return spec


def to_code(spec: Spec) -> str:
    layout = spec["layout"]
    if layout == "flex":
        container = "display: flex; gap: 12px;"
        block_extra = "flex: 1;"
    elif layout == "grid":
        container = f"display: grid; grid-template-columns: repeat({spec['columns']}, 1fr); gap: 12px;"
        block_extra = ""
    else:
        container = "display: flex; flex-direction: column; gap: 10px;"
        block_extra = ""
    css = [
        "* { box-sizing: border-box; margin: 0; }",
        f"body {{ width: {WIDTH}px; background: {spec['background']}; font-family: {spec['font']}; padding: 16px; }}",
        f"header {{ background: {PALETTE[spec['header_color']]}; color: #ffffff; padding: {spec['padding']}px; "
        f"text-align: {spec['align']}; border-radius: {spec['radius']}px; }}",
        f"header h1 {{ font-size: {spec['header_size']}px; }}",
        f"nav {{ display: flex; gap: 16px; margin-top: 8px; color: {PALETTE[spec['accent']]}; font-weight: bold; }}",
        f".container {{ {container} margin-top: 14px; }}",
        f".block {{ {block_extra} padding: {spec['padding']}px; border-radius: {spec['radius']}px; color: #ffffff; }}",
        ".block h2 { font-size: 18px; margin-bottom: 6px; }",
        ".block p { font-size: 13px; }",
        f"button {{ margin-top: 8px; padding: 6px 12px; border: none; background: #ffffff; "
        f"color: {PALETTE[spec['accent']]}; border-radius: 4px; }}",
        f"footer {{ margin-top: 14px; text-align: center; color: {PALETTE[spec['accent']]}; font-size: 13px; }}",
    ]
    if spec.get("compact"):  # the simple pages: drop the rules of elements the page does not have
        used = {
            "nav": bool(spec["nav"]),
            "footer": bool(spec["footer"]),
            "button": any(b["button"] for b in spec["blocks"]),
            ".block p": any(b["text"] for b in spec["blocks"]),
        }
        css = [rule for rule in css if not any(rule.startswith(name + " ") and not on for name, on in used.items())]
    body = ["<header>", f"  <h1>{spec['header_text']}</h1>", "</header>"]
    if spec["nav"]:
        body += ["<nav>"] + [f"  <span>{item}</span>" for item in spec["nav"]] + ["</nav>"]
    body.append('<div class="container">')
    for b in spec["blocks"]:
        body.append(f'  <div class="block" style="background: {PALETTE[b["color"]]};">')
        body.append(f"    <h2>{b['title']}</h2>")
        if b["text"]:
            body.append(f"    <p>{b['text']}</p>")
        if b["button"]:
            body.append("    <button>Open</button>")
        body.append("  </div>")
    body.append("</div>")
    if spec["footer"]:
        body.append(f"<footer>{spec['footer']}</footer>")
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', "<style>"]
    lines += ["  " + rule for rule in css]
    lines += ["</style>", "</head>", "<body>"] + ["  " + line for line in body] + ["</body>", "</html>"]
    return "\n".join(lines) + "\n"


def _wrong_colour(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if rng.random() < 0.3:
            s["header_color"] = other_colour(rng, s["header_color"])
        else:
            block = rng.choice(s["blocks"])
            block["color"] = other_colour(rng, block["color"])

    return to_code(edited(spec, edit))


def _wrong_size(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        s["header_size"] = s["header_size"] + rng.choice((-10, 14))
        s["padding"] = s["padding"] + rng.choice((12, 20))

    return to_code(edited(spec, edit))


def _wrong_layout(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        s["layout"] = rng.choice([layout for layout in LAYOUTS if layout != s["layout"]])

    return to_code(edited(spec, edit))


def _wrong_position(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        s["blocks"].reverse()
        s["align"] = "center" if s["align"] == "left" else "left"

    return to_code(edited(spec, edit))


def _missing_element(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if s["nav"] and rng.random() < 0.3:
            s["nav"] = []
        else:
            s["blocks"].pop(rng.randrange(len(s["blocks"])))

    return to_code(edited(spec, edit))


def _partial(spec: Spec, rng: random.Random) -> str:
    return truncate_lines(to_code(spec), rng, 0.5, 0.85)


MUTATIONS = {
    "wrong_colour": _wrong_colour,
    "wrong_size": _wrong_size,
    "wrong_layout": _wrong_layout,
    "wrong_position": _wrong_position,
    "missing_element": _missing_element,
    "partial_code": _partial,
}

DOMAIN = Domain(
    name="web",
    language="html",
    language_phrase="HTML",
    render_options={},  # renderer defaults: WIDTH x HEIGHT is the HTML renderer's default viewport
    sample=sample,
    to_code=to_code,
    mutations=MUTATIONS,
    sample_simple=sample_simple,
    generate_prompts=(
        "Write the HTML and CSS code for the web page in this screenshot.",
        "Convert this web page screenshot into a single HTML file with inline CSS.",
        "Generate HTML code that reproduces the page shown above.",
    ),
)
