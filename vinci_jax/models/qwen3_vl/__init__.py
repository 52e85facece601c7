"""Qwen3-VL in Flax NNX, numerically equal to transformers' Qwen3VLForConditionalGeneration."""

from vinci_jax.models.qwen3_vl.config import Qwen3TextConfig, Qwen3VisionConfig, Qwen3VLConfig, parameter_count
from vinci_jax.models.qwen3_vl.modeling import Qwen3VLForConditionalGeneration

__all__ = [
    "Qwen3TextConfig",
    "Qwen3VLConfig",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VisionConfig",
    "load_qwen3_vl",
    "parameter_count",
]


def __getattr__(name: str):
    # Convenience re-export of the HF loader (vinci_jax.hf.qwen3_vl), imported lazily: hf imports this package.
    if name == "load_qwen3_vl":
        from vinci_jax.hf.qwen3_vl import load_qwen3_vl

        return load_qwen3_vl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
