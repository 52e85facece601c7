"""The render job and render result: the only door between the trainer and the renderer processes."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

STATUSES = ("ok", "error", "timeout", "crashed", "unsupported", "infra")
# "infra": the renderer itself could not run the job (sandbox setup, an import the environment has but the job could
# not reach, Chromium or TeX would not start, no worker could be started). Never the model's failure: callers must
# not score it, and should stop when it is common (see RenderPool.self_check and vinci_jax.rl.render_health).
INFRA = "infra"
SUPPORTED_LANGUAGES = ("python", "svg", "html", "latex")


class InfraError(RuntimeError):
    """Raised inside a worker when the rendering machinery (not the job's code) failed; becomes status "infra"."""


class RenderInfraError(RuntimeError):
    """Raised to callers when the render pool cannot work at all (start-up self-check, too many infra results)."""


@dataclass(frozen=True)
class RenderJob:
    """Code to render. `options` override per-language defaults (width, height, dpi, viewport, timeout_s, ...);
    options["trace"] ("matplotlib", "rdkit", "html" or a list) also records what the code drew (RenderResult.trace)."""

    code: str
    language: str
    options: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    def dedupe_key(self) -> tuple[str, str, str]:
        """Jobs with equal keys render to the same picture, so a batch renders each key once."""
        return (self.language, self.code, repr(sorted(dict(self.options).items())))


@dataclass
class RenderResult:
    """What came back for one job. `png` is set only when status is "ok"; `error` is "" only then."""

    status: str
    png: bytes | None
    error: str
    seconds: float
    blank: bool = False
    trace: dict[str, Any] | None = None  # what the code drew, for jobs with options["trace"] (renderers.trace_run)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"RenderResult status {self.status!r} is not one of {STATUSES}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def infra(self) -> bool:
        """The renderer failed, not the code: not to be scored as the model's failure."""
        return self.status == INFRA

    def image(self) -> Image.Image | None:
        """The decoded picture as RGB, or None when there is none."""
        if self.png is None:
            return None
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as img:
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")
