"""The evaluation sample and the metric family of each domain."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from PIL import Image

# domain -> (code language, metric family)
DOMAIN_LANGUAGE = {"chart": "python", "web": "html", "svg": "svg", "tikz": "latex", "chem": "python", "other": "python"}

DEFAULT_PROMPTS = {
    "chart": "<image>\nWrite Python matplotlib code that reproduces this chart exactly.",
    "web": "<image>\nWrite the HTML (with inline CSS) of this web page.",
    "svg": "<image>\nWrite SVG code that draws this picture.",
    "tikz": "<image>\nWrite a LaTeX TikZ picture that reproduces this figure.",
    "chem": "<image>\nWrite Python RDKit code that draws this molecule.",
    "other": "<image>\nWrite Python code that draws this picture.",
}


@dataclasses.dataclass
class EvalSample:
    """One benchmark item: the target picture, the prompt the model gets, and the gold code when the release has it.

    `image` holds encoded bytes; None means "render the gold code to get the target" (releases without pictures).
    `meta` carries benchmark extras (e.g. `smiles` for molecule sets, `chart_type`). `render_options` are the
    renderer options the target was made with (viewport, dpi); gold and predicted code are rendered with them.
    """

    id: str
    suite: str
    domain: str
    language: str
    prompt: str
    image: bytes | None
    gold_code: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    render_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def target_image(self) -> Image.Image | None:
        if self.image is None:
            return None
        with Image.open(io.BytesIO(self.image)) as img:
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")


def make_sample(suite: str, domain: str, sample_id: str, image: bytes | None, gold_code: str | None,
                prompt: str | None = None, **meta: Any) -> EvalSample:  # fmt: skip
    if domain not in DOMAIN_LANGUAGE:
        raise ValueError(f"sample {sample_id!r}: unknown domain {domain!r}; choose one of {sorted(DOMAIN_LANGUAGE)}")
    text = prompt or DEFAULT_PROMPTS[domain]
    if "<image>" not in text:
        text = "<image>\n" + text
    return EvalSample(sample_id, suite, domain, DOMAIN_LANGUAGE[domain], text, image, gold_code, dict(meta))
