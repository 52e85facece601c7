"""renderers: model-written code -> PNG, in sandboxed, pre-warmed CPU worker processes.

This package never imports JAX. The only door between it and `vinci_jax` is the render job (code, language,
options) and the render result (image or error).
"""

from renderers.extract import LANGUAGES, extract_code, language_from_prompt
from renderers.pool import RenderPool, render_one
from renderers.types import INFRA, SUPPORTED_LANGUAGES, RenderInfraError, RenderJob, RenderResult

__all__ = [
    "INFRA",
    "LANGUAGES",
    "SUPPORTED_LANGUAGES",
    "RenderInfraError",
    "RenderJob",
    "RenderPool",
    "RenderResult",
    "extract_code",
    "language_from_prompt",
    "render_one",
]
