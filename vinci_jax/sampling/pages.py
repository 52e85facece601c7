"""The page pool's host side: which pages are free, how many a memory budget buys.

Page 0 is never handed out: it is the sink that padding slots and finished rows write into, so the device step
needs no branch for them. Everything else is a plain free list; sharing (a prompt's full pages read by its n
samples) is reference-counted by the engine, which gives a page back only when its last reader is done.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SINK_PAGE = 0


class PageAllocator:
    """Free list over pages 1 .. num_pages - 1."""

    def __init__(self, num_pages: int):
        if num_pages < 2:
            raise ValueError(f"a page pool needs at least 2 pages (one is the sink), got {num_pages}")
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, 0, -1))

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return self.num_pages - 1 - len(self._free)

    def take(self, count: int) -> list[int] | None:
        """`count` free pages, or None (nothing taken) when fewer are free."""
        if count > len(self._free):
            return None
        taken = [self._free.pop() for _ in range(count)]
        return taken

    def give(self, pages: list[int]) -> None:
        if SINK_PAGE in pages:
            raise ValueError("the sink page is never allocated, so it cannot be given back")
        self._free.extend(reversed(pages))


def page_bytes(text: Any, page_size: int, dtype: Any) -> int:
    """Bytes of one page over all layers, keys and values."""
    itemsize = np.dtype(dtype).itemsize
    return 2 * text.num_hidden_layers * text.num_key_value_heads * page_size * text.head_dim * itemsize


def pages_for_budget(text: Any, page_size: int, dtype: Any, budget_mb: float) -> int:
    """How many pages (sink included) fit in `budget_mb` MiB."""
    return max(2, math.floor(budget_mb * 2**20 / page_bytes(text, page_size, dtype)))


def pages_for_tokens(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)
