"""svg: cairosvg at 336x336 on white by default, never resolving external entities, files or URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEFAULTS = {"width": 336, "height": 336, "background": "white"}
# A DOCTYPE with an internal subset is where entity tricks live; SVG never needs one.
_ENTITY = re.compile(rb"<!ENTITY|<!DOCTYPE[^>]*\[", re.IGNORECASE)


def warm_up() -> None:
    import cairosvg

    cairosvg.svg2png(bytestring=b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', unsafe=False)


def render_svg(code: str, options: Mapping[str, Any]) -> tuple[str, bytes | None, str]:
    """Rasterise `code`. Entity declarations are refused up front with a clear error; cairosvg's safe mode
    (defusedxml parsing, no fetching of files or URLs: such references simply draw nothing) does the rest."""
    import cairosvg

    data = code.encode("utf-8")
    if _ENTITY.search(data):
        return "error", None, "svg declares XML entities (a DOCTYPE subset); external entities are not allowed"
    width = int(options.get("width", DEFAULTS["width"]))
    height = int(options.get("height", DEFAULTS["height"]))
    try:
        png = cairosvg.svg2png(
            bytestring=data,
            unsafe=False,
            output_width=width,
            output_height=height,
            background_color=options.get("background", DEFAULTS["background"]),
        )
    except Exception as err:  # noqa: BLE001 - malformed or hostile SVG is a render error
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return "error", None, f"svg render failed: {type(err).__name__}: {message}"[:500]
    return "ok", png, ""
