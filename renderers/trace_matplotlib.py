"""Instrumentation of what matplotlib draws, recorded the way the official ChartMimic and Plot2Code evaluators do.

Installed inside a sandboxed job process (see `renderers.trace_run`) before the job's code runs. The facts below
are taken from ChartMimic's `chart2code/utils/evaluator/*` (and `post_process/code_interpreter.py`) and from
Plot2Code's `plot2code/eval/text_match_score.py`; the code is ours. `collect()` returns two records:

`chartmimic` (state at the first `plt.savefig(` / `plt.show(` call, else at the end of the run or at the error
that stopped it: ChartMimic cuts the predicted code at its first `plt.savefig(` / `plt.show(`, wraps the rest in
`try: ... except Exception: pass` and saves `plt.gcf()`, so a run that fails halfway is scored on what it drew):
- `texts`: every string the PDF backend's `draw_text` receives when `plt.gcf()` is saved as PDF after
  `set_xticks([])` / `set_yticks([])` on all its axes (TextEvaluator(use_axs=False)): one entry per drawn line of a
  multi-line text, tick labels gone (3-D z ticks stay), mathtext as its source string;
- `layout`: [nrows, ncols, row_start, row_end, col_start, col_end] (ends inclusive) per axes of `plt.gcf()` that has
  a subplot spec (LayoutEvaluator); `num_axes` for the graph category's special case;
- `types`: {callable: calls} of ChartTypeEvaluator's wrapped callables (TYPE_TARGETS), a call made inside another
  traced call not counted (e.g. `hist` calling `bar`, `Circle.__init__` calling `Ellipse.__init__`);
- `colors`: [[callable, colour]] as ColorEvaluator keeps them: one object per (callable, colour) pair as first
  recorded, its colours re-read at the end, duplicates dropped, and above 10 entries a greedy filter that drops a
  colour more than 0.7 similar (1 - CIEDE2000/100) to one kept; colormaps as their names.
`plot2code` (state at the end of the run, `plt.gcf()` drawn first): `texts` [lower-cased stripped string, x, y]
for every visible Text artist reachable through `get_children()` with its own `get_position()`, and the figure's
`size_inches`.
Deviations from the official code (documented in vinci_jax/evaluate/README.md): the cut point is the first
runtime call of pyplot's savefig/show rather than the first textual occurrence; the >10 colour filter walks colours
in first-drawn order (the official walks `list(set(...))`, an order that changes with the hash seed); colours that
cannot be converted are skipped (the official raises inside the drawing call); a traced call that raises resets
the nesting flag (the official leaves it set, so nothing after is counted).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from typing import Any

MAX_COLOR_ENTRIES = 2048

# ChartTypeEvaluator's wrapped callables: (module, class or None, attribute).
TYPE_TARGETS = (
    *(("matplotlib.axes", "Axes", n) for n in (
        "bar", "barh", "plot", "axhline", "axvline", "axvspan", "axhspan", "hlines", "vlines", "errorbar", "boxplot",
        "violinplot", "violin", "hist", "fill_between", "fill_betweenx", "scatter", "quiver", "pie", "fill", "imshow",
        "pcolor", "contour", "contourf", "broken_barh", "tripcolor")),
    *(("mpl_toolkits.mplot3d", "Axes3D", n) for n in (
        "scatter", "plot", "plot_surface", "bar3d", "bar", "add_collection3d")),
    ("matplotlib.image", "NonUniformImage", "__init__"),
    ("matplotlib.patches", "Ellipse", "__init__"),
    ("matplotlib.patches", "Circle", "__init__"),
    ("matplotlib_venn._common", "VennDiagram", "__init__"),
    ("squarify", None, "plot"),
    *(("networkx.drawing.nx_pylab", None, n) for n in (
        "draw_networkx_nodes", "draw_networkx_edges", "draw_networkx_labels")),
    *(("networkx", None, n) for n in ("draw_networkx_nodes", "draw_networkx_edges", "draw_networkx_labels")),
)  # fmt: skip

_state: dict[str, Any] = {}


def _reset() -> None:
    installed = _state.get("installed", False)
    _state.update(type_depth=0, color_depth=0, types={}, color_objects={}, frozen=None, errors=[], installed=installed)


_reset()


# ---------------------------------------------------------------------------------------------- colours


def to_hex(color: Any) -> str | None:
    """ColorEvaluator's convert_color_to_hex: '#RRGGBB' (a 9-character '#' string keeps its alpha digits)."""
    import matplotlib.colors as mcolors
    import numpy as np

    try:
        if isinstance(color, str):
            if color.startswith("#") and len(color) in (7, 9):
                return color.upper()
            return mcolors.to_hex(mcolors.to_rgba(color)).upper()
        if isinstance(color, (list, tuple, np.ndarray)) and len(color) in (3, 4):
            return mcolors.to_hex(color).upper()
    except (ValueError, TypeError):
        return None
    return None


def _cmap_name(cmap: Any) -> str | None:
    if cmap is None:
        return None
    return cmap if isinstance(cmap, str) else getattr(cmap, "name", None)


def _first(colors: Any) -> list[Any]:
    return [colors[0]] if len(colors) else []


def _facecolors_all(obj: Any) -> list[Any]:
    return list(obj.get_facecolors().tolist())


def _edgecolors_all(obj: Any) -> list[Any]:
    return [list(c) for c in obj.get_edgecolors()]


def _hist_patches(result: Any) -> list[Any]:
    from matplotlib.patches import Patch

    patches = result[2]
    items: list[Any] = []
    for entry in patches:
        items.extend([entry] if isinstance(entry, Patch) else list(entry))
    return items


def _one_per_item(items: Callable[[Any, tuple, dict], list[Any]], read: Callable[[Any], Any]):
    """Each item becomes its own object (bars, wedges, ...), keyed by its own colour."""

    def record(result: Any, args: tuple, kwargs: dict) -> list[tuple[Any, list[Any]]]:
        return [(item, [read(item)]) for item in items(result, args, kwargs)]

    return record, lambda obj, key: [read(obj)]


def _whole(read_all: Callable[[Any], list[Any]]):
    """The call's result is one object with many colours, keyed by its last colour (hlines, quiver, ...)."""

    def record(result: Any, args: tuple, kwargs: dict) -> list[tuple[Any, list[Any]]]:
        colors = read_all(result)
        return [(result, colors)] if colors else []

    return record, lambda obj, key: read_all(obj)


def _cmap_or(read_all: Callable[[Any], list[Any]], expand: bool):
    """Scatter / surface: the colormap's name when `cmap=` was passed, else the colours."""

    def record(result: Any, args: tuple, kwargs: dict) -> list[tuple[Any, list[Any]]]:
        name = _cmap_name(kwargs.get("cmap"))
        if name is not None:
            return [(result, [CmapName(name)])]
        colors = read_all(result)
        return [(result, colors if expand else colors[:1])] if colors else []

    def resolve(obj: Any, key: str) -> list[Any]:
        if not key.startswith("#"):
            return [CmapName(key)]
        colors = read_all(obj)
        return colors if expand else colors[:1]

    return record, resolve


def _cmap_of(get: Callable[[Any, tuple], Any]):
    def record(result: Any, args: tuple, kwargs: dict) -> list[tuple[Any, list[Any]]]:
        obj = get(result, args)
        return [(obj, [CmapName(obj.get_cmap().name)])]

    return record, lambda obj, key: [CmapName(obj.get_cmap().name)]


def _color_rules() -> dict[tuple[str, str | None, str], tuple[str, Callable[..., Any], Callable[..., Any]]]:
    """ColorEvaluator's wrapped callables -> (group, record(result, args, kwargs), resolve(obj, key colour))."""
    from matplotlib.patches import PathPatch

    face = lambda o: list(o.get_facecolor())  # noqa: E731
    line = lambda o: o.get_color()  # noqa: E731
    rules = {
        ("matplotlib.axes._base", "_process_plot_var_args", "_make_line"): (
            "line", *_one_per_item(lambda r, a, k: [r[0]], lambda o: o.get_color())),
        ("matplotlib.axes", "Axes", "axhline"): ("axhline", *_one_per_item(lambda r, a, k: [r], line)),
        ("matplotlib.axes", "Axes", "axvline"): ("axvline", *_one_per_item(lambda r, a, k: [r], line)),
        ("matplotlib.axes", "Axes", "_fill_between_x_or_y"): (
            "fill_between", *_one_per_item(lambda r, a, k: [r], lambda o: list(o.get_facecolors()[0]))),
        ("matplotlib.axes", "Axes", "bar"): (
            "bar", *_one_per_item(lambda r, a, k: list(r), lambda o: list(o._original_facecolor))),
        ("matplotlib.axes", "Axes", "pie"): ("pie", *_one_per_item(lambda r, a, k: list(r[0]), face)),
        ("matplotlib.axes", "Axes", "axvspan"): ("axvspan", *_one_per_item(lambda r, a, k: [r], face)),
        ("matplotlib.axes", "Axes", "axhspan"): ("axhspan", *_one_per_item(lambda r, a, k: [r], face)),
        ("matplotlib.axes", "Axes", "hlines"): ("hlines", *_whole(_edgecolors_all)),
        ("matplotlib.axes", "Axes", "vlines"): ("vlines", *_whole(_edgecolors_all)),
        ("matplotlib.axes", "Axes", "boxplot"): ("boxplot", *_one_per_item(
            lambda r, a, k: [b for b in r["boxes"] if type(b) is PathPatch], face)),
        ("matplotlib.axes", "Axes", "violinplot"): ("violinplot", *_one_per_item(
            lambda r, a, k: list(r["bodies"]), lambda o: list(o.get_facecolor()[0]))),
        ("matplotlib.axes", "Axes", "hist"): ("hist", *_one_per_item(lambda r, a, k: _hist_patches(r), face)),
        ("matplotlib.axes", "Axes", "quiver"): ("quiver", *_whole(_facecolors_all)),
        ("matplotlib.axes", "Axes", "fill"): ("fill", *_one_per_item(lambda r, a, k: list(r), face)),
        ("matplotlib.axes", "Axes", "broken_barh"): ("broken_barh", *_whole(_facecolors_all)),
        **{("matplotlib.axes", "Axes", n): (n, *_cmap_of(lambda r, a: r))
           for n in ("imshow", "pcolor", "contour", "contourf", "tripcolor")},
        ("matplotlib.image", "NonUniformImage", "__init__"): ("image.__init__", *_cmap_of(lambda r, a: a[0])),
        ("matplotlib.patches", "Ellipse", "__init__"): ("patches.__init__", *_one_per_item(
            lambda r, a, k: [a[0]], lambda o: o.get_facecolor())),
        ("matplotlib.patches", "Circle", "__init__"): ("patches.__init__", *_one_per_item(
            lambda r, a, k: [a[0]], lambda o: o.get_facecolor())),
        ("matplotlib_venn._common", "VennDiagram", "__init__"): ("venn.__init__", *_whole(
            lambda o: [p.get_facecolor() for p in o.patches if p is not None])),
        ("squarify", None, "plot"): ("squarify.plot", *_one_per_item(
            lambda r, a, k: [i for c in r.containers for i in c], face)),
        ("mpl_toolkits.mplot3d", "Axes3D", "scatter"): ("scatter_3d", *_cmap_or(_facecolors_all, expand=True)),
        ("mpl_toolkits.mplot3d", "Axes3D", "plot"): (
            "plot_3d", *_one_per_item(lambda r, a, k: list(r), lambda o: o.get_color())),
        ("mpl_toolkits.mplot3d", "Axes3D", "plot_surface"): (
            "plot_surface_3d", *_cmap_or(_facecolors_all, expand=False)),
        ("mpl_toolkits.mplot3d", "Axes3D", "bar3d"): (
            "bar3d_3d", *_whole(lambda o: _facecolors_all(o)[:1])),
        ("mpl_toolkits.mplot3d", "Axes3D", "bar"): ("bar_3d", *_one_per_item(lambda r, a, k: list(r), face)),
        ("mpl_toolkits.mplot3d", "Axes3D", "add_collection3d"): ("add_collection3d_3d", *_whole(_facecolors_all)),
    }  # fmt: skip
    for module in ("networkx.drawing.nx_pylab", "networkx"):
        rules[(module, None, "draw_networkx_nodes")] = ("draw_networkx_nodes", *_whole(_facecolors_all))
        rules[(module, None, "draw_networkx_labels")] = (
            "draw_networkx_labels",
            *_whole(lambda o: [t.get_color() for t in o.values()]),
        )
        rules[(module, None, "draw_networkx_edges")] = (
            "draw_networkx_edges",
            *_whole(lambda o: [p.get_facecolor() for p in o] if isinstance(o, list) else _facecolors_edges(o)),
        )
    return rules


def _facecolors_edges(obj: Any) -> list[Any]:
    return list(obj.get_edgecolors().tolist())


def _scatter_rule(polar: bool):
    return (
        "scatter_polar" if polar else "scatter",
        *_cmap_or(lambda o: [list(c) for c in _first(o.get_facecolor())], expand=False),
    )


def _record_colors(group: str, record: Callable[..., Any], result: Any, args: tuple, kwargs: dict) -> None:
    objects = _state["color_objects"]
    for obj, colors in record(result, args, kwargs):
        keys = [k for k in map(_key, colors) if k is not None]
        if keys and len(objects) < MAX_COLOR_ENTRIES:
            objects[(group, keys[-1])] = obj


class CmapName(str):
    """A colormap's name: compared by name, never converted to a colour."""


def _key(value: Any) -> str | None:
    return str(value) if isinstance(value, CmapName) else to_hex(value)


def resolved_colors(rules: dict[str, Callable[..., Any]]) -> list[list[str]]:
    """update_drawed_colors: each kept object's colours re-read now; (group, colour) pairs once, first-drawn order.
    (The >10 entries filter is applied by the metric, vinci_jax.evaluate.chart_metrics.)"""
    out: list[list[str]] = []
    for (group, key), obj in list(_state["color_objects"].items()):
        try:
            values = rules[group](obj, key)
        except Exception:  # noqa: BLE001 - an object the code broke afterwards gives no colour
            continue
        for value in values:
            colour = _key(value)
            if colour is not None and [group, colour] not in out:
                out.append([group, colour])
    return out


# ---------------------------------------------------------------------------------------------- wrapping


def _resolve_target(module: str, cls: str | None):
    import importlib

    mod = importlib.import_module(module)
    return mod if cls is None else getattr(mod, cls)


def _wrap(owner: Any, name: str, before: Callable[..., Any] | None = None, *, kind: str, handler: Any) -> None:
    original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if original is None:
        return
    depth_key = f"{kind}_depth"

    @functools.wraps(original)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if _state[depth_key]:
            return original(*args, **kwargs)
        _state[depth_key] += 1
        try:
            result = original(*args, **kwargs)
        finally:
            _state[depth_key] -= 1
        if _state["frozen"] is None:
            try:
                handler(result, args, kwargs)
            except Exception as err:  # noqa: BLE001 - a reading we cannot make is noted, the drawing goes on
                if len(_state["errors"]) < 20:
                    _state["errors"].append(f"{kind} {name}: {type(err).__name__}: {err}"[:200])
        return result

    setattr(owner, name, traced)


def _type_key(module: str, cls: str | None, name: str, args: tuple) -> str:
    from matplotlib.projections.polar import PolarAxes

    owner = f"{module}.{cls}" if cls else module
    if name == "__init__" and module == "matplotlib.patches":
        owner = "matplotlib.patches"  # Ellipse and Circle constructors share one file, hence one type
    if name == "plot" and cls == "Axes" and args and type(args[0]) is PolarAxes:
        return f"{owner}.plot_polar"
    return f"{owner}.{name}"


def _install_types() -> None:
    for module, cls, name in TYPE_TARGETS:
        try:
            owner = _resolve_target(module, cls)
        except (ImportError, AttributeError):
            continue

        def count(result: Any, args: tuple, kwargs: dict, module=module, cls=cls, name=name) -> None:
            key = _type_key(module, cls, name, args)
            _state["types"][key] = _state["types"].get(key, 0) + 1

        _wrap(owner, name, kind="type", handler=count)


def _install_colors() -> dict[str, Callable[..., Any]]:
    from matplotlib.projections.polar import PolarAxes

    resolvers: dict[str, Callable[..., Any]] = {}
    rules = _color_rules()
    from matplotlib.axes import _base

    if not hasattr(_base._process_plot_var_args, "_make_line"):  # matplotlib < 3.9 calls it _makeline
        rules[("matplotlib.axes._base", "_process_plot_var_args", "_makeline")] = rules.pop(
            ("matplotlib.axes._base", "_process_plot_var_args", "_make_line")
        )
    exact = {"Ellipse", "Circle", "NonUniformImage", "VennDiagram"}
    for (module, cls, name), (group, record, resolve) in rules.items():
        try:
            owner = _resolve_target(module, cls)
        except (ImportError, AttributeError):
            continue
        resolvers[group] = resolve

        def handle(result: Any, args: tuple, kwargs: dict, group=group, record=record, cls=cls) -> None:
            if cls in exact and type(args[0]).__name__ != cls:
                return
            _record_colors(group, record, result, args, kwargs)

        _wrap(owner, name, kind="color", handler=handle)
    # scatter and polar plot read the axes type at call time
    scatter_rules = {False: _scatter_rule(False), True: _scatter_rule(True)}
    for polar in (False, True):
        resolvers[scatter_rules[polar][0]] = scatter_rules[polar][2]
    line_group = "plot_polar"
    line_record, line_resolve = _one_per_item(lambda r, a, k: list(r), lambda o: o.get_color())
    resolvers[line_group] = line_resolve
    from matplotlib.axes import Axes

    def handle_scatter(result: Any, args: tuple, kwargs: dict) -> None:
        group, record, _ = scatter_rules[bool(args) and type(args[0]) is PolarAxes]
        _record_colors(group, record, result, args, kwargs)

    def handle_polar_plot(result: Any, args: tuple, kwargs: dict) -> None:
        if args and type(args[0]) is PolarAxes:
            _record_colors(line_group, line_record, result, args, kwargs)

    _wrap(Axes, "scatter", kind="color", handler=handle_scatter)
    polar_plot = Axes.__dict__["plot"]
    PolarAxes.plot = polar_plot  # the official wraps PolarAxes.plot: Axes.plot set on the polar class
    _wrap(PolarAxes, "plot", kind="color", handler=handle_polar_plot)
    return resolvers


# ---------------------------------------------------------------------------------------------- records


def _layout(figure: Any) -> list[list[int]]:
    rows = []
    for ax in figure.axes:
        spec = ax.get_subplotspec()
        if spec is None:
            continue
        nrows, ncols = spec.get_gridspec().get_geometry()
        rows_, cols = spec.rowspan, spec.colspan
        rows.append([nrows, ncols, rows_.start, rows_.stop - 1, cols.start, cols.stop - 1])
    return rows


def _pdf_texts(figure: Any) -> list[str]:
    """Strings the PDF renderer's draw_text receives when the figure is saved without x/y ticks."""
    from matplotlib.backends.backend_pdf import RendererPdf

    saved = []
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            saved.append((axis, axis.get_major_locator(), axis.get_minor_locator(),
                          axis.isDefault_majloc, axis.isDefault_minloc))  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    drawn: list[str] = []
    original = RendererPdf.draw_text

    def draw_text(self: Any, gc: Any, x: float, y: float, s: str, *args: Any, **kwargs: Any) -> Any:
        drawn.append(s)
        return original(self, gc, x, y, s, *args, **kwargs)

    RendererPdf.draw_text = draw_text
    try:
        figure.canvas.print_figure(io.BytesIO(), format="pdf")
    finally:
        RendererPdf.draw_text = original
        for axis, major, minor, default_major, default_minor in saved:
            axis.set_major_locator(major)
            axis.set_minor_locator(minor)
            axis.isDefault_majloc, axis.isDefault_minloc = default_major, default_minor
            axis.axes.stale = True
    return [s if isinstance(s, str) else str(s) for s in drawn]


def _chartmimic_record(reason: str) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    figure = plt.gcf()
    record: dict[str, Any] = {"frozen_at": reason, "types": dict(_state["types"]), "errors": list(_state["errors"])}
    record["layout"] = _layout(figure)
    record["num_axes"] = len(figure.axes)
    try:
        record["colors"] = resolved_colors(_state["resolvers"])
    except Exception as err:  # noqa: BLE001
        record["colors"], record["errors"] = [], [*record["errors"], f"colors: {type(err).__name__}: {err}"[:200]]
    try:
        record["texts"] = _pdf_texts(figure)
    except ImportError as err:  # the tracer's own stack is missing: an infrastructure failure, not the code's
        record["texts"], record["infra_error"] = [], f"texts: {type(err).__name__}: {err}"[:200]
    except Exception as err:  # noqa: BLE001 - a figure the PDF backend cannot draw logs no text
        record["texts"], record["errors"] = [], [*record["errors"], f"texts: {type(err).__name__}: {err}"[:200]]
    return record


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plot2code_texts(component: Any, out: list[list[Any]], depth: int = 0) -> None:
    from matplotlib.text import Text

    if depth > 200 or len(out) > 20_000:
        return
    if isinstance(component, Text) and component.get_visible():
        text = component.get_text()
        text = text.strip().lower() if isinstance(text, str) else ""
        if text:
            x, y = (component.get_position() + (None, None))[:2]
            out.append([text, _number(x), _number(y)])
    for child in component.get_children():
        _plot2code_texts(child, out, depth + 1)


def _plot2code_record() -> dict[str, Any]:
    import matplotlib.pyplot as plt

    figure = plt.gcf()
    try:
        figure.canvas.draw()  # the official saves the figure before reading it: tick labels get their text
    except Exception:  # noqa: BLE001
        pass
    texts: list[list[Any]] = []
    _plot2code_texts(figure, texts)
    return {"texts": texts, "size_inches": [float(v) for v in figure.get_size_inches()]}


# ---------------------------------------------------------------------------------------------- entry points


def _freeze(reason: str) -> None:
    if _state["frozen"] is None:
        _state["frozen"] = _chartmimic_record(reason)


def install() -> None:
    """Patch matplotlib in this process (once) so that collect() can report what the job drew."""
    import matplotlib

    matplotlib.use("Agg")

    _reset()
    if _state.get("installed"):
        return
    _install_types()
    _state["resolvers"] = _install_colors()
    _state["installed"] = True


def wrap_capture_calls() -> None:
    """Freeze the ChartMimic record at the first `plt.savefig` / `plt.show` call. Call after the renderer's own
    capture hooks are in place: the picture is taken by the call itself, the record (which moves ticks) after."""
    import matplotlib.pyplot as plt

    for name in ("savefig", "show"):
        original = getattr(plt, name)

        def first_call(*args: Any, _original=original, _name=name, **kwargs: Any) -> Any:
            result = _original(*args, **kwargs)
            _freeze(_name)
            return result

        setattr(plt, name, functools.wraps(original)(first_call))


def collect() -> dict[str, Any]:
    """The ChartMimic and Plot2Code records of this run (see the module docstring)."""
    plot2code = _plot2code_record()
    chartmimic = _state["frozen"] if _state["frozen"] is not None else _chartmimic_record("end")
    return {"chartmimic": chartmimic, "plot2code": plot2code}
