"""Qwen2.5-VL text decoder and the full vision-language model in Flax NNX.

The decoder, KV cache, image splicing and the wrapper are the shared Qwen-VL ones (`vinci_jax.models.qwen_vl.
modeling`: inputs, decoding and the layer scan are described there); what is Qwen2.5-VL's is written here: the
attention projections with qkv bias (head_dim = hidden_size / heads), the chunked multimodal rotary layout
(consecutive frequency slots per `mrope_section` axis) and the windowed vision tower (`vision.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vinci_jax.models.qwen2_5_vl.config import TextConfig
from vinci_jax.models.qwen2_5_vl.vision import Qwen25VisionTransformer
from vinci_jax.models.qwen_vl.modeling import QwenAttention, QwenTextModel, QwenVLForConditionalGeneration

__all__ = ["Attention", "Qwen25VLForConditionalGeneration", "Qwen2Model", "mrope_axis_of_slot"]


def mrope_axis_of_slot(config: TextConfig) -> np.ndarray:
    """Position axis of each of the head_dim/2 frequency slots: the slots of section i of `mrope_section` take
    axis i % 3 (temporal, height, width), as in HF's `recomposition_frequencies`."""
    return np.concatenate([np.full(n, i % 3) for i, n in enumerate(config.mrope_section)])


class Attention(QwenAttention):
    """Grouped-query attention with qkv bias (Qwen2), no o_proj bias, no q/k norm."""

    def __init__(self, config: TextConfig, **kw: Any):
        super().__init__(config, qkv_bias=True, o_bias=False, qk_norm=False, **kw)


class Qwen2Model(QwenTextModel):
    """Token embedding, Qwen2 decoder layers, final norm (HF's `model.language_model`, saved as `model.*`)."""

    attention_class = Attention

    def mrope_axis_of_slot(self) -> np.ndarray:
        return mrope_axis_of_slot(self.config)


class Qwen25VLForConditionalGeneration(QwenVLForConditionalGeneration):
    """Vision tower + Qwen2 decoder + LM head, equal to transformers' Qwen2_5_VLForConditionalGeneration.

    Calls, options and decoding are the shared wrapper's (`QwenVLForConditionalGeneration`); `vision_inputs` are
    the window-slot layout of `prepare_vision_inputs` with this model's `config.vision`.
    """

    vision_class = Qwen25VisionTransformer
    text_class = Qwen2Model
