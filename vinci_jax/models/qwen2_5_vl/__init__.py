"""Qwen2.5-VL in Flax NNX, numerically equal to transformers' Qwen2_5_VLForConditionalGeneration."""

from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig, TextConfig, VisionConfig
from vinci_jax.models.qwen2_5_vl.modeling import Qwen25VLForConditionalGeneration
from vinci_jax.models.qwen_vl.modeling import KVCache

__all__ = [
    "KVCache",
    "Qwen25VLConfig",
    "Qwen25VLForConditionalGeneration",
    "TextConfig",
    "VisionConfig",
]
