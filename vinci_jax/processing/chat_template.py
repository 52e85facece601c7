"""The Qwen2-VL / Qwen2.5-VL chat format, rendered in Python so assistant spans are known by character offset.

`QWEN_VL_CHAT_TEMPLATE` is the Jinja template released with the checkpoints (saved next to the tokenizer so
transformers renders the same text); `render_chat` produces identical text for the messages it accepts, and also
records where each assistant reply sits, which the SFT labels need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vinci_jax.processing.special_tokens import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_PLACEHOLDER = "<image>"  # ms-swift style marker inside string content

QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ROLES = ("system", "user", "assistant")


class ImageSlot:
    """Marks where an image goes in a message; carries the PIL image when the message embedded one."""

    __slots__ = ("image",)

    def __init__(self, image: Any = None) -> None:
        self.image = image


Segment = str | ImageSlot


@dataclass(frozen=True)
class RenderedChat:
    """Prompt text with one `<|image_pad|>` per image slot, plus where the assistant wrote."""

    text: str
    assistant_spans: tuple[tuple[int, int], ...]  # [start, end) char ranges: reply content + its <|im_end|>
    image_slots: tuple[ImageSlot, ...]


def _is_image_part(part: Mapping[str, Any]) -> bool:
    return part.get("type") == "image" or "image" in part or "image_url" in part


def message_segments(message: Mapping[str, Any], index: int) -> list[Segment]:
    """Content of one message as text pieces and image slots, in order."""
    content = message.get("content")
    if isinstance(content, str):
        pieces = content.split(IMAGE_PLACEHOLDER)
        segments: list[Segment] = []
        for i, piece in enumerate(pieces):
            if i:
                segments.append(ImageSlot())
            if piece:
                segments.append(piece)
        return segments
    if isinstance(content, Sequence):
        segments = []
        for part in content:
            if not isinstance(part, Mapping):
                raise TypeError(f"message {index}: content parts must be dicts, got {type(part).__name__}")
            if _is_image_part(part):
                embedded = part.get("image")
                segments.append(ImageSlot(embedded if not isinstance(embedded, str) else None))
            elif part.get("type") == "video" or "video" in part:
                raise ValueError(f"message {index}: video inputs are not supported; pass frames as images")
            elif "text" in part:
                segments.append(str(part["text"]))
        return segments
    raise TypeError(f"message {index}: content must be a str or a list of parts, got {type(content).__name__}")


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> RenderedChat:
    """Render messages in the Qwen-VL chat format (same text as QWEN_VL_CHAT_TEMPLATE, images not yet expanded)."""
    if not messages and not add_generation_prompt:
        raise ValueError("no messages to render; pass at least one message")
    parts: list[str] = []
    length = 0
    spans: list[tuple[int, int]] = []
    slots: list[ImageSlot] = []

    def emit(text: str) -> None:
        nonlocal length
        parts.append(text)
        length += len(text)

    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {index}: role {role!r} is not one of {ROLES}")
        if index == 0 and role != "system":
            emit(f"{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n")
        emit(f"{IM_START}{role}\n")
        start = length
        for segment in message_segments(message, index):
            if isinstance(segment, ImageSlot):
                slots.append(segment)
                emit(f"{VISION_START}{IMAGE_PAD}{VISION_END}")
            else:
                emit(segment)
        emit(IM_END)
        if role == "assistant":
            spans.append((start, length))
        emit("\n")
    if add_generation_prompt:
        emit(f"{IM_START}assistant\n")
    return RenderedChat("".join(parts), tuple(spans), tuple(slots))


def to_hf_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Same conversation with `<image>` markers turned into HF content parts (for transformers' apply_chat_template)."""
    converted = []
    for index, message in enumerate(messages):
        parts: list[dict[str, Any]] = []
        for segment in message_segments(message, index):
            parts.append({"type": "image"} if isinstance(segment, ImageSlot) else {"type": "text", "text": segment})
        converted.append({"role": message["role"], "content": parts})
    return converted
