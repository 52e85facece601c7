"""Host-side preprocessing for Qwen2.5-VL and Qwen3-VL (numpy + PIL, no JAX): images, chat templates, processors."""

from vinci_jax.processing.chat_template import DEFAULT_SYSTEM_PROMPT, QWEN_VL_CHAT_TEMPLATE, render_chat
from vinci_jax.processing.image_processor import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageProcessor, smart_resize
from vinci_jax.processing.processor import QwenProcessor, assistant_token_mask
from vinci_jax.processing.qwen3_vl import QWEN3_VL_CHAT_TEMPLATE, Qwen3VLProcessor, qwen3_vl_image_processor
from vinci_jax.processing.special_tokens import SPECIAL_TOKENS
from vinci_jax.processing.tokenizer import load_tokenizer

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "QWEN3_VL_CHAT_TEMPLATE",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "QWEN_VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "ImageProcessor",
    "Qwen3VLProcessor",
    "QwenProcessor",
    "assistant_token_mask",
    "load_tokenizer",
    "qwen3_vl_image_processor",
    "render_chat",
    "smart_resize",
]
