"""html: one long-lived Chromium per worker (Playwright, Debian's /usr/bin/chromium) and a reused page.

Every request other than a data: URI is aborted, dialogs are dismissed, animations are disabled, and the page is
screenshotted full-page at the viewport size (1280x720 by default). A page that hangs (endless JS) gets its
context thrown away; a crashed or vanished browser is relaunched and the job retried once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from renderers.types import InfraError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
DEFAULTS = {"viewport_width": 1280, "viewport_height": 720}
_FATAL_MARKERS = ("crash", "closed", "disconnected", "has been closed", "browser has been")


class BrowserCrashed(RuntimeError):
    """The browser or its page died; the caller relaunches and retries once."""


class HtmlRenderer:
    """Holds the Playwright driver, the browser and one page, and renders HTML strings with them."""

    def __init__(self, executable_path: str = CHROMIUM, flags: tuple[str, ...] = CHROMIUM_FLAGS) -> None:
        self.executable_path, self.flags = executable_path, flags
        self._playwright = None
        self._browser = None
        self._context = None
        self._page = None
        self._viewport: tuple[int, int] | None = None

    def start(self) -> None:
        """Start Playwright and Chromium; a failure here is the renderer's (InfraError), never the page's."""
        try:
            from playwright.sync_api import sync_playwright

            if self._playwright is None:
                self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable_path, args=list(self.flags), handle_sigint=False, handle_sigterm=False
            )
        except Exception as err:  # noqa: BLE001
            self._browser = None
            raise InfraError(f"chromium failed to start ({self.executable_path}): {type(err).__name__}: {err}") from err
        self._render_once("<html><body><p>warm-up</p></body></html>", {}, 30.0, 10**9)

    def _new_page(self, width: int, height: int) -> None:
        self._close_context()
        self._context = self._browser.new_context(
            viewport={"width": width, "height": height}, java_script_enabled=True, offline=False
        )
        self._context.route("**/*", _route_only_data)
        page = self._context.new_page()
        page.on("dialog", _dismiss)
        self._page, self._viewport = page, (width, height)

    def _close_context(self) -> None:
        if self._context is not None:
            try:
                self._context.close()
            except Exception:  # noqa: BLE001 - a dead context is what we are replacing
                pass
        self._context, self._page = None, None

    def close(self) -> None:
        self._close_context()
        for closer in (getattr(self._browser, "close", None), getattr(self._playwright, "stop", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001
                    pass
        self._browser = self._playwright = None

    def relaunch(self) -> None:
        self._close_context()
        try:
            if self._browser is not None:
                self._browser.close()
        except Exception:  # noqa: BLE001
            pass
        self._browser = None
        self.start()

    def render(self, code: str, options: Mapping[str, Any], timeout_s: float, max_pixels: int):
        """(status, png, error). Retries once on a fresh browser when the browser died under us."""
        try:
            return self._render_once(code, options, timeout_s, max_pixels)
        except BrowserCrashed:
            self.relaunch()
            try:
                return self._render_once(code, options, timeout_s, max_pixels)
            except BrowserCrashed as err:
                return "crashed", None, f"chromium crashed twice on this page: {err}"[:500]

    def _render_once(self, code: str, options: Mapping[str, Any], timeout_s: float, max_pixels: int):
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        width = int(options.get("viewport_width", options.get("width", DEFAULTS["viewport_width"])))
        height = int(options.get("viewport_height", options.get("height", DEFAULTS["viewport_height"])))
        deadline = time.monotonic() + timeout_s

        def remaining_ms() -> float:
            return max(1.0, (deadline - time.monotonic()) * 1000.0)

        if self._browser is None or not self._browser.is_connected():
            raise BrowserCrashed("browser is not connected")
        try:
            if self._page is None or self._page.is_closed() or self._viewport != (width, height):
                self._new_page(width, height)
            page = self._page
            page.set_content(code, wait_until="load", timeout=remaining_ms())
            full = page.evaluate(
                "() => [Math.max(document.documentElement.scrollWidth, document.body ? document.body.scrollWidth : 0),"
                " Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)]"
            )
            pixels = max(int(full[0]), width) * max(int(full[1]), height)
            if pixels > max_pixels:
                return "error", None, f"the page is {full[0]}x{full[1]} = {pixels} px, over the {max_pixels} px budget"
            png = page.screenshot(full_page=True, animations="disabled", timeout=remaining_ms())
            return "ok", png, ""
        except PlaywrightTimeout:
            self._close_context()  # the page may be stuck in script; never reuse it
            return "timeout", None, f"html page did not load and render within {timeout_s:g} s"
        except PlaywrightError as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if any(marker in message.lower() for marker in _FATAL_MARKERS) or not self._browser.is_connected():
                self._close_context()
                raise BrowserCrashed(message) from err
            self._close_context()
            return "error", None, f"html render failed: {message}"[:500]


def _route_only_data(route: Any) -> None:
    if route.request.url.startswith("data:"):
        route.continue_()
    else:
        route.abort()


def _dismiss(dialog: Any) -> None:
    try:
        dialog.dismiss()
    except Exception:  # noqa: BLE001
        pass
