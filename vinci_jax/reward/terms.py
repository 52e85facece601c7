"""Host-side, per-rollout parts of the reward: which code to render, and the format / alignment terms.

Released behaviour (`fold_alignment_into_format=True`): the language comes from the prompt, the code is the last
fenced block of that language, format = 1 iff there is one; a block in another language counts as no block, so the
paper's alignment reward is folded into format. Unfolded: format = 1 for any fenced block, alignment = 1 when the
last block's language is the prompt's, and a mismatched block is still rendered in its own language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from renderers import extract_code, language_from_prompt

_ANY_BLOCK = re.compile(r"```([A-Za-z0-9_+-]*)\s*\n(.*?)```", re.DOTALL)
_TAG_ALIASES = {"tikz": "latex", "tex": "latex", "py": "python", "python3": "python"}


@dataclass(frozen=True)
class ParsedResponse:
    """What the reward needs from one (prompt, response) pair before rendering."""

    language: str  # the prompt's language
    code: str | None  # code to render (None: nothing to render)
    render_language: str  # the language to render `code` in
    format: float
    alignment: float


def parse_response(prompt: str, response: str, fold_alignment_into_format: bool = True) -> ParsedResponse:
    language = language_from_prompt(prompt)
    code = extract_code(response, language)
    if fold_alignment_into_format:
        has = code is not None
        return ParsedResponse(language, code, language, float(has), float(has))
    blocks = _ANY_BLOCK.findall(response)
    if not blocks:
        return ParsedResponse(language, None, language, 0.0, 0.0)
    tag, body = blocks[-1]
    tag = _TAG_ALIASES.get(tag.lower(), tag.lower())
    aligned = tag == language
    if code is None:  # the block is in another language: render it as what it claims to be
        code, render_language = body, tag
    else:
        render_language = language
    return ParsedResponse(language, code, render_language, 1.0, float(aligned))
