"""Glue from the Grain SFT pipeline (`vinci_jax.input_pipeline`) to the trainer's iterators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ml_collections


def make_grain_iterators(
    config: ml_collections.ConfigDict, seed: int
) -> tuple[Any, Callable[[], Iterator[dict[str, Any]]] | None]:
    try:
        import vinci_jax.input_pipeline  # noqa: F401
    except ModuleNotFoundError as err:
        raise RuntimeError(
            "data.source='grain' needs vinci_jax.input_pipeline (issue #6), which is not available; "
            "use --config.data.source=synthetic (the trainer's stand-in data) or configs/sft.py:standin"
        ) from err
    raise NotImplementedError("grain pipeline integration pending")
