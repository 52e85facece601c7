"""Host-side preprocessing for Qwen2.5-VL (numpy + PIL, no JAX): images, chat template, tokenizer, processor."""

from vinci_jax.processing.chat_template import DEFAULT_SYSTEM_PROMPT, QWEN_VL_CHAT_TEMPLATE, render_chat
from vinci_jax.processing.image_processor import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageProcessor, smart_resize
from vinci_jax.processing.processor import QwenProcessor, assistant_token_mask
from vinci_jax.processing.special_tokens import SPECIAL_TOKENS
from vinci_jax.processing.tokenizer import load_tokenizer

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "QWEN_VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "ImageProcessor",
    "QwenProcessor",
    "assistant_token_mask",
    "load_tokenizer",
    "render_chat",
    "smart_resize",
]
