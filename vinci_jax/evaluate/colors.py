"""Colour difference CIEDE2000 (Sharma, Wu & Dalal 2005) on sRGB colours, and the similarity the metrics use.

Used by the ChartMimic colour F1 and the Design2Code colour score. similarity = max(0, 1 - dE00 / 100): equal colours
score 1, red vs blue (dE00 ~ 52) about 0.48, black vs white 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_WHITE_D65 = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)


def parse_color(value: str | Sequence[float]) -> tuple[int, int, int] | None:
    """'#rrggbb', '#rgb', 'rgb(r, g, b)', 'rgba(r, g, b, a)' or an (r, g, b) 0..255 sequence -> (r, g, b)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"#[0-9a-f]{6}", text):
            return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
        if re.fullmatch(r"#[0-9a-f]{3}", text):
            return tuple(int(c * 2, 16) for c in text[1:])  # type: ignore[return-value]
        found = re.fullmatch(r"rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:[,\s/]+([\d.]+))?\s*\)", text)
        if found:
            return tuple(int(round(float(found.group(i)))) for i in (1, 2, 3))  # type: ignore[return-value]
        return None
    if len(value) >= 3:
        return tuple(int(round(float(c))) for c in value[:3])  # type: ignore[return-value]
    return None


def rgb_to_lab(rgb: Sequence[int]) -> tuple[float, float, float]:
    """sRGB 0..255 -> CIE L*a*b* (D65)."""
    linear = []
    for c in rgb:
        c = c / 255.0
        linear.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    xyz = [sum(m * v for m, v in zip(row, linear, strict=True)) for row in _RGB_TO_XYZ]

    def f(t: float) -> float:
        delta = 6 / 29
        return t ** (1 / 3) if t > delta**3 else t / (3 * delta**2) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, _WHITE_D65, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1: Sequence[float], lab2: Sequence[float]) -> float:
    """CIEDE2000 colour difference of two L*a*b* colours (kL = kC = kH = 1)."""
    l1, a1, b1 = lab1
    l2, a2, b2 = lab2
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar**7 / (c_bar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dlp, dcp = l2 - l1, c2p - c1p
    if c1p * c2p == 0:
        dhp = 0.0
    elif abs(h2p - h1p) <= 180:
        dhp = h2p - h1p
    elif h2p - h1p > 180:
        dhp = h2p - h1p - 360
    else:
        dhp = h2p - h1p + 360
    dHp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp) / 2)
    lp_bar, cp_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hp_bar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hp_bar = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        hp_bar = (h1p + h2p + 360) / 2
    else:
        hp_bar = (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hp_bar - 30))
        + 0.24 * math.cos(math.radians(2 * hp_bar))
        + 0.32 * math.cos(math.radians(3 * hp_bar + 6))
        - 0.20 * math.cos(math.radians(4 * hp_bar - 63))
    )
    d_theta = 30 * math.exp(-(((hp_bar - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(cp_bar**7 / (cp_bar**7 + 25**7))
    s_l = 1 + 0.015 * (lp_bar - 50) ** 2 / math.sqrt(20 + (lp_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    return math.sqrt((dlp / s_l) ** 2 + (dcp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dcp / s_c) * (dHp / s_h))


def color_similarity(c1: str | Sequence[float], c2: str | Sequence[float]) -> float:
    """max(0, 1 - CIEDE2000 / 100) of two sRGB colours; 0 when either cannot be parsed."""
    p1, p2 = parse_color(c1), parse_color(c2)
    if p1 is None or p2 is None:
        return 0.0
    if p1 == p2:
        return 1.0
    return max(0.0, 1.0 - ciede2000(rgb_to_lab(p1), rgb_to_lab(p2)) / 100.0)
