"""Shared pieces of the synthetic task generators: the domain interface, palettes, words and the prompts.

Every generator is a pure function of a `random.Random`, so a sample is fully determined by (seed, index, attempt).
Prompts name the code language the way the public VinciCoder data does, so `renderers.language_from_prompt` picks
the right renderer for both the synthetic and the real data.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# name -> hex; wide hue spread so a colour mutation always changes the picture visibly.
PALETTE: dict[str, str] = {
    "red": "#d62728",
    "blue": "#1f77b4",
    "green": "#2ca02c",
    "orange": "#ff7f0e",
    "purple": "#9467bd",
    "brown": "#8c564b",
    "pink": "#e377c2",
    "gray": "#7f7f7f",
    "olive": "#bcbd22",
    "cyan": "#17becf",
    "navy": "#1b2a6b",
    "teal": "#008080",
    "gold": "#e6b800",
    "crimson": "#a4133c",
    "black": "#222222",
}
LIGHT: tuple[str, ...] = ("#ffffff", "#f5f5f5", "#fdf6e3", "#eef4fb", "#f3f9f1", "#fff4e6", "#f7f0fa")

# Words for titles and labels; none of them contains a language keyword (svg, html, python, latex, tikz, mermaid).
WORDS: tuple[str, ...] = (
    "annual",
    "revenue",
    "growth",
    "sales",
    "energy",
    "market",
    "share",
    "city",
    "river",
    "forest",
    "ocean",
    "signal",
    "noise",
    "model",
    "score",
    "team",
    "north",
    "south",
    "east",
    "west",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "spring",
    "summer",
    "autumn",
    "winter",
    "price",
    "volume",
    "speed",
    "rate",
    "yield",
    "output",
    "input",
    "traffic",
    "weather",
    "rain",
    "solar",
    "wind",
    "coffee",
    "garden",
    "music",
    "travel",
    "health",
    "budget",
    "profit",
    "orders",
    "users",
    "visits",
    "clicks",
    "study",
    "report",
    "survey",
    "index",
    "level",
)


def words(rng: random.Random, n: int, capitalize: bool = True) -> str:
    picked = [rng.choice(WORDS) for _ in range(n)]
    text = " ".join(picked)
    return text[:1].upper() + text[1:] if capitalize else text


def colours(rng: random.Random, n: int) -> list[str]:
    """n distinct palette colour names."""
    return rng.sample(sorted(PALETTE), n)


def other_colour(rng: random.Random, current: str) -> str:
    return rng.choice([c for c in sorted(PALETTE) if c != current])


Spec = dict[str, Any]
# A mutation returns the flawed code, or None when it does not apply to this spec (e.g. no legend to drop).
Mutation = Callable[[Spec, random.Random], "str | None"]


@dataclasses.dataclass(frozen=True)
class Domain:
    """One synthetic domain: how to sample a spec, write its code, flaw it, and ask for it."""

    name: str
    language: str  # the renderer / fence language
    language_phrase: str  # how prompts name the language ("Python matplotlib", "HTML", ...)
    # Renderer options of the targets. Kept empty (renderer defaults) on purpose: ViRL rollouts, the evaluator and
    # `python -m vinci_jax.reward score` render responses with the defaults, and a target made with other options
    # (a 640x480 viewport, another dpi) is one no policy can match (tests/reward/test_reward_gold.py).
    render_options: Mapping[str, Any]
    sample: Callable[[random.Random, int], Spec]
    to_code: Callable[[Spec], str]
    mutations: Mapping[str, Mutation]
    generate_prompts: Sequence[str]
    # The demo's simpler program distribution (`SynthConfig.simple`): a fixed number of elements per picture and no
    # optional text, so a tiny policy can learn where a program ends under greedy decoding (with a random count
    # every "one more element?" is close to a coin flip, and greedy then repeats the element until it runs out of
    # tokens). None: the domain's difficulty-0 sampler is already that simple.
    sample_simple: Callable[[random.Random], Spec] | None = None


def edited(spec: Spec, edit: Callable[[Spec], Any]) -> Spec:
    """A deep copy of `spec` with `edit` applied (mutations never touch the original)."""
    out = copy.deepcopy(spec)
    edit(out)
    return out


def fence(language: str, code: str) -> str:
    return f"```{language}\n{code.rstrip()}\n```"


REFINE_PROMPTS: tuple[str, ...] = (
    "<image>\nThe {phrase} code below is supposed to reproduce the image above, but its output is wrong.\n"
    "{flawed}\nFix the code so that it renders exactly the image. Return the complete corrected code.",
    "<image>\nHere is the target image and a flawed attempt written in {phrase}:\n{flawed}\n"
    "Identify what differs from the image and give the corrected {phrase} code.",
    "<image>\nRefine this {phrase} code so its rendering matches the picture.\n{flawed}",
)


def generate_prompt(domain: Domain, rng: random.Random) -> str:
    return "<image>\n" + rng.choice(list(domain.generate_prompts)).format(phrase=domain.language_phrase)


def refine_prompt(domain: Domain, rng: random.Random, flawed_code: str) -> str:
    template = rng.choice(REFINE_PROMPTS)
    return template.format(phrase=domain.language_phrase, flawed=fence(domain.language, flawed_code))


def truncate_lines(code: str, rng: random.Random, keep_min: float = 0.35, keep_max: float = 0.75) -> str:
    """Code cut after a random fraction of its lines: it fails or renders only part of the picture."""
    lines = code.rstrip().split("\n")
    keep = max(1, int(len(lines) * rng.uniform(keep_min, keep_max)))
    return "\n".join(lines[:keep]) + "\n"
