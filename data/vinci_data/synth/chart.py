"""Matplotlib charts: bar, horizontal bar, line, scatter, pie, histogram and two-panel subplots.

Difficulty 0: one series, few labels; 1: two or three series with legend and title; 2: subplots, grids, annotations.
"""

from __future__ import annotations

import random

from vinci_data.synth.common import PALETTE, Domain, Spec, colours, edited, other_colour, truncate_lines, words

KINDS: tuple[str, ...] = ("bar", "barh", "line", "scatter", "pie", "hist")
LEGEND_LOCS: tuple[str, ...] = ("upper left", "upper right", "lower left", "lower right")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "x")


def _panel(rng: random.Random, kind: str, difficulty: int) -> Spec:
    n_series = 1 if difficulty == 0 or kind in ("pie", "hist") else rng.randint(2, 3)
    n_points = rng.randint(4, 6 + 2 * difficulty)
    names = colours(rng, max(n_series, n_points if kind == "pie" else 1))
    series = []
    for s in range(n_series):
        if kind == "hist":
            values = [round(rng.gauss(rng.uniform(20, 60), rng.uniform(4, 15)), 1) for _ in range(40)]
        elif kind == "scatter":
            values = [[round(rng.uniform(0, 10), 1), round(rng.uniform(0, 10), 1)] for _ in range(n_points * 2)]
        else:
            values = [rng.randint(5, 95) for _ in range(n_points)]
        series.append({"label": words(rng, 1), "color": names[s], "values": values, "marker": rng.choice(MARKERS)})
    return {
        "kind": kind,
        "title": words(rng, rng.randint(2, 3)) if difficulty > 0 or rng.random() < 0.5 else "",
        "xlabel": words(rng, 1) if kind not in ("pie",) else "",
        "ylabel": words(rng, 1) if kind not in ("pie",) else "",
        "categories": [words(rng, 1) for _ in range(n_points)],
        "pie_colors": names[:n_points],
        "series": series,
        "legend": n_series > 1 or (difficulty > 0 and kind == "pie"),
        "legend_loc": rng.choice(LEGEND_LOCS),
        "grid": difficulty >= 2 and kind not in ("pie",) and rng.random() < 0.6,
        "bins": rng.choice((8, 10, 12, 15)),
    }


def sample(rng: random.Random, difficulty: int) -> Spec:
    subplots = difficulty >= 2 and rng.random() < 0.5
    n_panels = 2 if subplots else 1
    panels = [_panel(rng, rng.choice(KINDS), difficulty) for _ in range(n_panels)]
    width = rng.choice((5.0, 6.0, 7.0)) if n_panels == 1 else 9.0
    return {"panels": panels, "figsize": [width, rng.choice((3.5, 4.0, 4.5))], "suptitle": ""}


SIMPLE_KINDS: tuple[str, ...] = ("bar", "barh", "line", "pie")  # no scatter / hist: their value lists run long


def sample_simple(rng: random.Random) -> Spec:
    """One panel of four values (multiples of ten), no title, axis labels, legend or grid."""
    kind = rng.choice(SIMPLE_KINDS)
    names = colours(rng, 4)
    series = {"label": words(rng, 1), "color": names[0], "values": [rng.randrange(10, 100, 10) for _ in range(4)],
              "marker": rng.choice(MARKERS)}  # fmt: skip
    panel = {
        "kind": kind,
        "title": "",
        "xlabel": "",
        "ylabel": "",
        "categories": [words(rng, 1) for _ in range(4)],
        "pie_colors": names,
        "series": [series],
        "legend": False,
        "legend_loc": LEGEND_LOCS[0],
        "grid": False,
        "bins": 10,
    }
    return {"panels": [panel], "figsize": [rng.choice((5.0, 6.0, 7.0)), 4.0], "suptitle": ""}


def _panel_code(p: Spec, ax: str) -> list[str]:
    lines: list[str] = []
    cats = p["categories"]
    kind = p["kind"]
    if kind in ("bar", "barh"):
        n = len(p["series"])
        width = round(0.8 / n, 3)
        lines.append(f"x = np.arange({len(cats)})")
        for i, s in enumerate(p["series"]):
            offset = round((i - (n - 1) / 2) * width, 3)
            fn = "bar" if kind == "bar" else "barh"
            lines.append(
                f"{ax}.{fn}(x + {offset}, {s['values']}, {width}, label={s['label']!r}, color={PALETTE[s['color']]!r})"
            )
        tick = "xticks" if kind == "bar" else "yticks"
        lines.append(f"{ax}.set_{tick}(x)")
        lines.append(f"{ax}.set_{tick[0]}ticklabels({cats!r})")
    elif kind == "line":
        for s in p["series"]:
            lines.append(
                f"{ax}.plot({cats!r}, {s['values']}, marker={s['marker']!r}, label={s['label']!r}, "
                f"color={PALETTE[s['color']]!r})"
            )
    elif kind == "scatter":
        for s in p["series"]:
            xs = [v[0] for v in s["values"]]
            ys = [v[1] for v in s["values"]]
            lines.append(
                f"{ax}.scatter({xs}, {ys}, marker={s['marker']!r}, label={s['label']!r}, color={PALETTE[s['color']]!r})"
            )
    elif kind == "pie":
        s = p["series"][0]
        cols = [PALETTE[c] for c in p["pie_colors"]]
        lines.append(f"{ax}.pie({s['values']}, labels={cats!r}, colors={cols!r}, autopct='%1.0f%%', startangle=90)")
        lines.append(f"{ax}.axis('equal')")
    elif kind == "hist":
        s = p["series"][0]
        lines.append(
            f"{ax}.hist({s['values']}, bins={p['bins']}, color={PALETTE[s['color']]!r}, edgecolor='white', "
            f"label={s['label']!r})"
        )
    if p["title"]:
        lines.append(f"{ax}.set_title({p['title']!r})")
    if p["xlabel"]:
        lines.append(f"{ax}.set_xlabel({p['xlabel']!r})")
    if p["ylabel"]:
        lines.append(f"{ax}.set_ylabel({p['ylabel']!r})")
    if p["grid"]:
        lines.append(f"{ax}.grid(True, linestyle='--', alpha=0.5)")
    if p["legend"]:
        lines.append(f"{ax}.legend(loc={p['legend_loc']!r})")
    return lines


def to_code(spec: Spec) -> str:
    panels = spec["panels"]
    w, h = spec["figsize"]
    lines = ["import matplotlib.pyplot as plt", "import numpy as np", ""]
    if len(panels) == 1:
        lines.append(f"fig, ax = plt.subplots(figsize=({w}, {h}))")
        lines += _panel_code(panels[0], "ax")
    else:
        lines.append(f"fig, axes = plt.subplots(1, {len(panels)}, figsize=({w}, {h}))")
        for i, p in enumerate(panels):
            lines.append("")
            lines += _panel_code(p, f"axes[{i}]")
    lines += ["", "plt.tight_layout()", "plt.show()"]
    return "\n".join(lines) + "\n"


# ---- mutations: each returns flawed code or None when it does not apply ----


def _wrong_colour(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        panel = rng.choice(s["panels"])
        if panel["kind"] == "pie":
            i = rng.randrange(len(panel["pie_colors"]))
            panel["pie_colors"][i] = other_colour(rng, panel["pie_colors"][i])
        else:
            series = rng.choice(panel["series"])
            series["color"] = other_colour(rng, series["color"])

    return to_code(edited(spec, edit))


def _wrong_type(spec: Spec, rng: random.Random) -> str | None:
    def edit(s: Spec) -> None:
        panel = rng.choice(s["panels"])
        swap = {"bar": "line", "line": "bar", "barh": "bar", "scatter": "line", "hist": "bar", "pie": "bar"}
        new = swap[panel["kind"]]
        if panel["kind"] == "scatter":
            for series in panel["series"]:
                series["values"] = [round(v[1]) for v in series["values"]][: len(panel["categories"])]
        if panel["kind"] == "hist":
            series = panel["series"][0]
            series["values"] = [round(v) for v in series["values"][: len(panel["categories"])]]
        panel["kind"] = new
        panel["xlabel"] = panel["xlabel"] or "category"
        panel["ylabel"] = panel["ylabel"] or "value"

    return to_code(edited(spec, edit))


def _wrong_size(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        w, h = s["figsize"]
        s["figsize"] = [round(w * rng.choice((0.6, 1.5)), 1), round(h * rng.choice((0.7, 1.4)), 1)]

    return to_code(edited(spec, edit))


def _wrong_values(spec: Spec, rng: random.Random) -> str | None:
    panels = [p for p in spec["panels"] if p["kind"] in ("bar", "barh", "line", "pie")]
    if not panels:
        return None

    def edit(s: Spec) -> None:
        panel = rng.choice([p for p in s["panels"] if p["kind"] in ("bar", "barh", "line", "pie")])
        values = panel["series"][0]["values"]
        values.reverse()
        values[0] = 100 if values[0] < 50 else 2

    return to_code(edited(spec, edit))


def _missing_element(spec: Spec, rng: random.Random) -> str | None:
    def edit(s: Spec) -> None:
        panel = rng.choice(s["panels"])
        options = []
        if panel["title"]:
            options.append("title")
        if panel["legend"]:
            options.append("legend")
        if len(panel["series"]) > 1:
            options.append("series")
        if panel["xlabel"]:
            options.append("xlabel")
        choice = rng.choice(options) if options else "series_labels"
        if choice == "series":
            panel["series"].pop(rng.randrange(len(panel["series"])))
        elif choice == "series_labels":
            panel["categories"] = panel["categories"][::-1]
        elif choice == "legend":
            panel["legend"] = False
        else:
            panel[choice] = ""

    return to_code(edited(spec, edit))


def _wrong_position(spec: Spec, rng: random.Random) -> str | None:
    panels = [p for p in spec["panels"] if p["legend"]]
    if not panels:
        return None

    def edit(s: Spec) -> None:
        panel = rng.choice([p for p in s["panels"] if p["legend"]])
        panel["legend_loc"] = rng.choice([loc for loc in LEGEND_LOCS if loc != panel["legend_loc"]])

    return to_code(edited(spec, edit))


def _runtime_error(spec: Spec, rng: random.Random) -> str:
    code = to_code(spec)
    return code.replace("fig, ax", "fig, axs", 1) if "fig, ax " in code else code.replace("axes[0]", "axes[5]", 1)


def _partial(spec: Spec, rng: random.Random) -> str:
    return truncate_lines(to_code(spec), rng, 0.45, 0.8)


MUTATIONS = {
    "wrong_colour": _wrong_colour,
    "wrong_chart_type": _wrong_type,
    "wrong_size": _wrong_size,
    "wrong_values": _wrong_values,
    "missing_element": _missing_element,
    "wrong_position": _wrong_position,
    "runtime_error": _runtime_error,
    "partial_code": _partial,
}

DOMAIN = Domain(
    name="chart",
    language="python",
    language_phrase="Python matplotlib",
    render_options={},  # renderer defaults (the figure sets its own size; dpi 100)
    sample=sample,
    to_code=to_code,
    mutations=MUTATIONS,
    sample_simple=sample_simple,
    generate_prompts=(
        "Write {phrase} code that reproduces this chart.",
        "Generate the code using {phrase} to recreate the chart shown in the image.",
        "You are an expert data visualisation engineer. Convert this chart into {phrase} code.",
        "Reproduce the figure above exactly with {phrase}.",
    ),
)
