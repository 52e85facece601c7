"""Instrumentation of what matplotlib draws, for the ChartMimic / Plot2Code low-level metrics.

Installed inside a sandboxed job process (see `renderers.trace_run`) before the job's code runs; `collect()` then
returns the trace of the last figure that was drawn (the renderer captures the latest figure too):
- `texts`: every non-empty Text artist drawn: string, centre in figure fractions (0..1, origin bottom left), colour;
- `layout`: one [nrows, ncols, row_start, row_stop, col_start, col_stop] per visible Axes placed on a grid spec
  (axes placed by hand, e.g. `fig.add_axes`, give ["free", x0, y0, x1, y1] rounded to 0.01);
- `types`: the plotting methods called by the code (top-level calls only: `hist` calling `bar` counts once);
- `colors`: [element kind, "#rrggbb"] per data element of each axes (lines, patches, collections, images' none).
What was recorded is what the metric compares; the record is made by the same process that ran the code, so it is
a measurement of the code, not a guarantee against code that tampers with matplotlib on purpose.
"""

from __future__ import annotations

import functools
from typing import Any

PLOT_METHODS = (
    "plot", "scatter", "bar", "barh", "hist", "hist2d", "pie", "boxplot", "violinplot", "errorbar", "fill",
    "fill_between", "fill_betweenx", "stackplot", "stem", "step", "imshow", "matshow", "pcolor", "pcolormesh",
    "contour", "contourf", "hexbin", "quiver", "streamplot", "table", "axhline", "axvline", "axhspan", "axvspan",
    "broken_barh", "eventplot", "loglog", "semilogx", "semilogy", "specgram", "spy", "tricontour", "tricontourf",
    "tripcolor", "triplot", "vlines", "hlines", "bar_label", "plot_surface", "plot_wireframe", "plot_trisurf",
    "bar3d", "scatter3D", "plot3D", "contour3D", "voxels",
)  # fmt: skip
MAX_COLORS_PER_COLLECTION = 64

_state: dict[str, Any] = {"depth": 0, "types": [], "drawn": {}, "last": None}


def _hex(rgba: Any) -> str | None:
    from matplotlib.colors import to_rgba

    try:
        r, g, b, a = to_rgba(rgba)
    except (ValueError, TypeError):
        return None
    if a == 0:
        return None
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


def _wrap_plot_method(cls: type, name: str) -> None:
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_vinci_traced", False):
        return

    @functools.wraps(original)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if _state["depth"] == 0:
            _state["types"].append(name)
        _state["depth"] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _state["depth"] -= 1

    traced._vinci_traced = True  # type: ignore[attr-defined]
    setattr(cls, name, traced)


def _text_record(text: Any, figure: Any) -> dict[str, Any] | None:
    string = text.get_text()
    if not isinstance(string, str) or not string.strip() or not text.get_visible():
        return None
    try:
        box = text.get_window_extent(renderer=figure.canvas.get_renderer())
        width, height = figure.bbox.width or 1.0, figure.bbox.height or 1.0
        x, y = (box.x0 + box.x1) / 2 / width, (box.y0 + box.y1) / 2 / height
    except Exception:  # noqa: BLE001 - a text without a position still counts for the text metric
        x, y = -1.0, -1.0
    return {"text": string.strip(), "x": round(float(x), 4), "y": round(float(y), 4), "color": _hex(text.get_color())}


def _axes_layout(ax: Any) -> list[Any]:
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is not None:
        grid = spec.get_gridspec()
        rows, cols = spec.rowspan, spec.colspan
        return [grid.nrows, grid.ncols, rows.start, rows.stop, cols.start, cols.stop]
    x0, y0, x1, y1 = ax.get_position().extents
    return ["free", *(round(float(v), 2) for v in (x0, y0, x1, y1))]


def _axes_colors(ax: Any) -> list[list[str]]:
    colors: list[list[str]] = []
    for line in ax.lines:
        if not line.get_visible():
            continue
        if line.get_linestyle() not in ("None", "none", "", " "):
            colors.append(["line", _hex(line.get_color())])
        if line.get_marker() not in (None, "None", "none", "", " "):
            colors.append(["marker", _hex(line.get_markerfacecolor())])
    for patch in ax.patches:
        if patch.get_visible() and patch.get_fill():
            colors.append(["patch", _hex(patch.get_facecolor())])
    for collection in ax.collections:
        if not collection.get_visible():
            continue
        faces = collection.get_facecolors()
        source = faces if len(faces) else collection.get_edgecolors()
        seen: list[str] = []
        for rgba in source[:MAX_COLORS_PER_COLLECTION]:
            colour = _hex(tuple(rgba))
            if colour is not None and colour not in seen:
                seen.append(colour)
        colors.extend(["collection", c] for c in seen)
    return [c for c in colors if c[1] is not None]


def _figure_record(figure: Any) -> dict[str, Any]:
    texts = [r for r in (_text_record(t, figure) for t in _drawn_texts(figure)) if r is not None]
    axes = [ax for ax in figure.get_axes() if ax.get_visible()]
    return {
        "texts": texts,
        "layout": [_axes_layout(ax) for ax in axes],
        "colors": [c for ax in axes for c in _axes_colors(ax)],
        "size": [float(figure.bbox.width), float(figure.bbox.height)],
    }


def _drawn_texts(figure: Any) -> list[Any]:
    return _state["drawn"].get(id(figure), [])


def install() -> None:
    """Patch matplotlib in this process so that drawing a figure records its texts, layout and colours."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    for name in PLOT_METHODS:
        _wrap_plot_method(Axes, name)
    try:
        from mpl_toolkits.mplot3d import Axes3D

        for name in PLOT_METHODS:
            if name in Axes3D.__dict__:
                _wrap_plot_method(Axes3D, name)
    except ImportError:
        pass

    original_figure_draw = Figure.draw
    original_text_draw = Text.draw

    @functools.wraps(original_figure_draw)
    def figure_draw(self: Figure, renderer: Any) -> Any:
        _state["drawn"][id(self)] = []
        _state["current"] = self
        try:
            return original_figure_draw(self, renderer)
        finally:
            _state["current"] = None
            _state["last"] = self

    @functools.wraps(original_text_draw)
    def text_draw(self: Text, renderer: Any) -> Any:
        result = original_text_draw(self, renderer)
        figure = _state.get("current")
        if figure is not None and self.get_visible() and self.get_text():
            _state["drawn"][id(figure)].append(self)
        return result

    Figure.draw = figure_draw
    Text.draw = text_draw


def collect() -> dict[str, Any]:
    """The trace of the last drawn figure (empty lists when nothing was drawn)."""
    figure = _state["last"]
    record = {"texts": [], "layout": [], "colors": [], "size": [0.0, 0.0]} if figure is None else _figure_record(figure)
    record["types"] = list(_state["types"])
    return record
