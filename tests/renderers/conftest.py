"""Shared render pools for the renderer tests: starting Chromium and TeX formats once keeps the suite fast."""

from __future__ import annotations

import pytest

from renderers import RenderPool

TEST_TIMEOUT_S = 3.0


@pytest.fixture(scope="session")
def pool():
    """A two-worker pool with every language warm and a short (3 s) job timeout."""
    with RenderPool(num_workers=2, timeout_s=TEST_TIMEOUT_S) as shared:
        yield shared
