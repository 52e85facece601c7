"""Design2Code's text blocks of a rendered page, found the way its evaluator finds them (no OCR).

Facts from NoviScl/Design2Code `Design2Code/metrics/ocr_free_utils.py` (`process_html`, `find_different_pixels`,
`extract_text_with_color`, `get_blocks_from_image_diff_pixels`); the code is ours and works on the live page instead
of a rewritten HTML file:
1. every element's background becomes transparent; each text-tag element (TEXT_TAGS, document order) gets its own
   text colour from the colour pool (16 levels 10, 26, ..., 250 per channel, taken from the end) and opacity 1;
2. the page is screenshotted (full page) with the pool, then with the pool shifted by 50 per channel;
3. changed pixels: those where (first + 50) mod 256 is within 8 of the second on every channel;
4. every non-empty text node of the body (stripped) takes the colour of its nearest element with an inline colour
   (the text-tag colour, or an author colour that does not change, or black without any: those give nothing);
5. a text node's block: the changed pixels within 4 of its colour on the first screenshot, boxed (page fractions,
   x, y, w, h with the +1 pixel width upstream uses), coloured by the mean of the page's own screenshot there.
Nodes of one element share a colour, hence a box; the metric merges blocks that share a box.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

TEXT_TAGS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "a", "b", "li", "table", "td", "th", "button",
             "footer", "header", "figcaption")  # fmt: skip
SHIFT = 50
CHANGED_TOLERANCE = 8
COLOUR_TOLERANCE = 4
MAX_BLOCKS = 5000
SCREENSHOT_TIMEOUT_MS = 15_000

RECOLOUR_JS = """([offset, tags]) => {
  const values = [];
  for (let v = 10; v <= 250; v += 16) values.push(v);
  const pool = [];
  for (const r of values) for (const g of values) for (const b of values)
    pool.push([(r + offset) % 256, (g + offset) % 256, (b + offset) % 256]);
  for (const el of document.querySelectorAll('*'))
    if (el.style) el.style.setProperty('background-color', 'rgba(255, 255, 255, 0)', 'important');
  let n = 0;
  for (const el of document.querySelectorAll(tags.join(','))) {
    const c = pool.pop();
    if (!c || !el.style) break;
    el.style.setProperty('color', `rgb(${c[0]}, ${c[1]}, ${c[2]})`, 'important');
    el.style.setProperty('opacity', '1', 'important');
    el.setAttribute('data-vinci-colour', c.join(','));
    n += 1;
  }
  return n;
}"""

TEXT_ITEMS_JS = """() => {
  const body = document.body;
  if (!body) return [];
  const ownColour = (el) => {
    if (el.hasAttribute('data-vinci-colour')) return el.getAttribute('data-vinci-colour').split(',').map(Number);
    const entries = (el.getAttribute('style') || '').split(';').filter(
      (s) => s.includes('color') && !s.includes('background-color'));
    return entries.length ? 'author' : null;
  };
  const items = [];
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const text = node.textContent.trim();
    if (!text) continue;
    let colour = null;
    for (let el = node.parentElement; el; el = el.parentElement) {
      colour = ownColour(el);
      if (colour !== null || el === body) break;
    }
    if (Array.isArray(colour)) items.push([text, colour]);
  }
  return items;
}"""


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"), np.int16)


def blocks_from_screenshots(
    original: np.ndarray, first: np.ndarray, shifted: np.ndarray, items: list[list[Any]]
) -> list[dict[str, Any]]:
    """Steps 3 and 5: one block per text item that has changed pixels of its colour."""
    if not (original.shape == first.shape == shifted.shape):
        return []  # upstream: "Images are not the same size" -> no blocks
    changed = np.all(np.abs((first + SHIFT) % 256 - shifted) <= CHANGED_TOLERANCE, axis=-1)
    rows, cols = np.nonzero(changed)
    if rows.size == 0:
        return []
    colours = first[rows, cols]
    height, width = first.shape[:2]
    blocks: list[dict[str, Any]] = []
    cache: dict[tuple[int, ...], dict[str, Any] | None] = {}
    for text, colour in items[:MAX_BLOCKS]:
        key = tuple(int(c) for c in colour)
        if key not in cache:
            hit = np.all(np.abs(colours - np.asarray(key, np.int16)) <= COLOUR_TOLERANCE, axis=-1)
            if not hit.any():
                cache[key] = None
            else:
                r, c = rows[hit], cols[hit]
                mean = original[r, c].mean(axis=0).astype(int)
                r0, r1, c0, c1 = int(r.min()), int(r.max()), int(c.min()), int(c.max())
                box = {"x": c0 / width, "y": r0 / height, "w": (c1 - c0 + 1) / width, "h": (r1 - r0 + 1) / height}
                cache[key] = {**box, "color": "rgb({}, {}, {})".format(*mean.tolist())}
        if cache[key] is not None:
            blocks.append({"text": text, **cache[key]})
    return blocks


def page_blocks(page: Any) -> dict[str, Any]:
    """Steps 1-5 on a loaded Playwright page (it is left recoloured: the renderer loads the next page afresh)."""

    def shot() -> bytes:
        return page.screenshot(full_page=True, animations="disabled", timeout=SCREENSHOT_TIMEOUT_MS)

    original = _rgb(shot())
    page.evaluate(RECOLOUR_JS, [0, list(TEXT_TAGS)])
    items = page.evaluate(TEXT_ITEMS_JS)
    first = _rgb(shot())
    page.evaluate(RECOLOUR_JS, [SHIFT, list(TEXT_TAGS)])
    shifted = _rgb(shot())
    height, width = original.shape[:2]
    return {"width": width, "height": height, "blocks": blocks_from_screenshots(original, first, shifted, items)}
