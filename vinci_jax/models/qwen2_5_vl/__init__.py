"""Qwen2.5-VL in Flax NNX, numerically equal to transformers' Qwen2_5_VLForConditionalGeneration."""

from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig, TextConfig, VisionConfig
from vinci_jax.models.qwen2_5_vl.modeling import KVCache, Qwen25VLForConditionalGeneration

__all__ = [
    "KVCache",
    "Qwen25VLConfig",
    "Qwen25VLForConditionalGeneration",
    "TextConfig",
    "VisionConfig",
    "load_qwen2_5_vl",
]


def __getattr__(name: str):
    # Convenience re-export of the HF loader (vinci_jax.hf.qwen2_5_vl), imported lazily: hf imports this package.
    if name == "load_qwen2_5_vl":
        from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl

        return load_qwen2_5_vl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
