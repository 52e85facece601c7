"""Code extraction from a model response, exactly as the released VinciCoder reward does it.

The language comes from the prompt (not from the response), and the code is the last fenced block of that
language; see shared/reference/virl.md, "Reward", steps 1-3.
"""

from __future__ import annotations

import re

# Order matters: the first of these found in the lower-cased prompt wins.
LANGUAGES: tuple[str, ...] = ("svg", "html", "python", "latex", "mermaid", "tikz")
DEFAULT_LANGUAGE = "python"
_ALIASES = {"tikz": "latex"}


def language_from_prompt(prompt: str) -> str:
    """The code language a prompt asks for: first of LANGUAGES found in it, `tikz` meaning `latex`, else python."""
    lowered = prompt.lower()
    for language in LANGUAGES:
        if language in lowered:
            return _ALIASES.get(language, language)
    return DEFAULT_LANGUAGE


def extract_code(response: str, language: str) -> str | None:
    """The body of the last ```<language> fenced block in `response`, or None when there is none."""
    pattern = re.compile(r"```" + re.escape(language) + r"\s*\n(.*?)```", re.DOTALL)
    blocks = pattern.findall(response)
    if not blocks:
        return None
    return blocks[-1]
