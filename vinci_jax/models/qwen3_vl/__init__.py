"""Qwen3-VL in Flax NNX, numerically equal to transformers' Qwen3VLForConditionalGeneration."""

from vinci_jax.models.qwen3_vl.config import Qwen3TextConfig, Qwen3VisionConfig, Qwen3VLConfig, parameter_count
from vinci_jax.models.qwen3_vl.modeling import Qwen3VLForConditionalGeneration

__all__ = [
    "Qwen3TextConfig",
    "Qwen3VLConfig",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VisionConfig",
    "parameter_count",
]
