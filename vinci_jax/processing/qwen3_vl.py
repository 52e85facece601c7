"""Qwen3-VL processing: its image settings (patch 16, merge 2, mean/std 0.5) and its chat format.

The image pipeline is Qwen2-VL's (`ImageProcessor`, HF's Qwen2VLImageProcessor with the checkpoint's
preprocessor_config.json); only the defaults differ. The chat format is the Qwen3-VL Instruct template: unlike
Qwen2.5-VL's, no default system prompt is inserted, only a leading system message is rendered, and image parts
render as `<|vision_start|><|image_pad|><|vision_end|>` without separators. `render_chat_qwen3` produces the same
text for the messages it accepts (system first, then user/assistant turns; images only in user turns) and records
the assistant spans the SFT labels need; anything the template would silently drop raises instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast

from vinci_jax.processing.chat_template import ImageSlot, RenderedChat, message_segments
from vinci_jax.processing.image_processor import ImageProcessor
from vinci_jax.processing.processor import QwenProcessor
from vinci_jax.processing.special_tokens import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START
from vinci_jax.processing.tokenizer import load_tokenizer_uncached, offline_tokenizer_dir

QWEN3_VL_IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
QWEN3_VL_IMAGE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
QWEN3_VL_MIN_PIXELS = 65536  # preprocessor_config.json size.shortest_edge of the released checkpoints
QWEN3_VL_MAX_PIXELS = 16777216  # size.longest_edge


def qwen3_vl_image_processor(
    min_pixels: int = QWEN3_VL_MIN_PIXELS, max_pixels: int = QWEN3_VL_MAX_PIXELS
) -> ImageProcessor:
    """The Qwen3-VL image processor settings (what its preprocessor_config.json holds)."""
    return ImageProcessor(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=QWEN3_VL_IMAGE_MEAN,
        image_std=QWEN3_VL_IMAGE_STD,
        extra_config={"processor_class": "Qwen3VLProcessor"},
    )


# Added after Qwen2.5's (ids 151665..151668), not special: they survive decoding with skip_special_tokens=True.
QWEN3_ADDED_TOKENS: tuple[str, ...] = ("<tool_response>", "</tool_response>", "<think>", "</think>")


@functools.lru_cache(maxsize=1)
def qwen3_vl_tokenizer() -> PreTrainedTokenizerFast:
    """The offline Qwen tokenizer with Qwen3's added tokens (a separate instance: the shared Qwen2.5 one is never
    mutated). Checkpoint directories bring their own tokenizer files instead."""
    tokenizer = load_tokenizer_uncached(str(offline_tokenizer_dir()))
    first = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_ADDED_TOKENS])
    ids = tokenizer.convert_tokens_to_ids(list(QWEN3_ADDED_TOKENS))
    if ids != list(range(first, first + len(QWEN3_ADDED_TOKENS))) or first != 151665:
        raise RuntimeError(f"Qwen3 added tokens got ids {ids} (vocabulary {first}); expected 151665..151668")
    return tokenizer


# The chat template released with Qwen/Qwen3-VL-{2B,4B,8B,32B}-Instruct (saved next to the tokenizer so
# transformers renders the same text as `render_chat_qwen3`).
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0].role == 'system' %}\n"
    "        {%- if messages[0].content is string %}\n            {{- messages[0].content }}\n        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n                {%- endif %}\n            {%- endfor %}\n"
    "        {%- endif %}\n        {{- '\\n\\n' }}\n    {%- endif %}\n"
    '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided '
    'with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n    {%- for tool in tools %}\n'
    '        {{- "\\n" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within '
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' }}\n        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- set image_count = namespace(value=0) %}\n{%- set video_count = namespace(value=0) %}\n"
    '{%- for message in messages %}\n    {%- if message.role == "user" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- if message.content is string %}\n"
    "            {{- message.content }}\n        {%- else %}\n            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n                {%- endif %}\n            {%- endfor %}\n"
    "        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- if message.content is string %}\n"
    "            {{- message.content }}\n        {%- else %}\n            {%- for content_item in message.content %}\n"
    "                {%- if 'text' in content_item %}\n                    {{- content_item.text }}\n"
    "                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and message.content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n                {%- endif %}\n                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n                {%- endif %}\n"
    '                {{- \'<tool_call>\\n{"name": "\' }}\n                {{- tool_call.name }}\n'
    '                {{- \'", "arguments": \' }}\n                {%- if tool_call.arguments is string %}\n'
    "                    {{- tool_call.arguments }}\n                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n"
    '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {%- if message.content is string %}\n            {{- message.content }}\n        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n                {%- endif %}\n            {%- endfor %}\n"
    "        {%- endif %}\n        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)


def render_chat_qwen3(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> RenderedChat:
    """Render messages as the Qwen3-VL template does (images not yet expanded), recording assistant spans."""
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
        segments = message_segments(message, index) if role in ("system", "user", "assistant") else None
        if role == "system":
            if index:
                raise ValueError(
                    f"message {index}: Qwen3-VL's chat template renders only a leading system message; merge it "
                    "into the first message"
                )
            if any(isinstance(s, ImageSlot) for s in segments):
                raise ValueError("message 0: images in the system message are dropped by Qwen3-VL's template")
            emit(f"{IM_START}system\n{''.join(segments)}{IM_END}\n")
        elif role == "user":
            emit(f"{IM_START}user\n")
            for segment in segments:
                if isinstance(segment, ImageSlot):
                    slots.append(segment)
                    emit(f"{VISION_START}{IMAGE_PAD}{VISION_END}")
                else:
                    emit(segment)
            emit(f"{IM_END}\n")
        elif role == "assistant":
            if any(isinstance(s, ImageSlot) for s in segments):
                raise ValueError(f"message {index}: images in assistant turns are dropped by Qwen3-VL's template")
            emit(f"{IM_START}assistant\n")
            start = length
            emit("".join(segments) + IM_END)
            spans.append((start, length))
            emit("\n")
        else:
            raise ValueError(f"message {index}: role {role!r} is not one of ('system', 'user', 'assistant')")
    if add_generation_prompt:
        emit(f"{IM_START}assistant\n")
    return RenderedChat("".join(parts), tuple(spans), tuple(slots))


class Qwen3VLProcessor(QwenProcessor):
    """QwenProcessor with Qwen3-VL's chat format and image defaults (same outputs, same SFT assistant mask)."""

    chat_template = QWEN3_VL_CHAT_TEMPLATE
    processor_class = "Qwen3VLProcessor"

    @classmethod
    def default_tokenizer(cls) -> PreTrainedTokenizerFast:
        return qwen3_vl_tokenizer()

    @classmethod
    def default_image_processor(cls) -> ImageProcessor:
        return qwen3_vl_image_processor()

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> RenderedChat:
        return render_chat_qwen3(messages, add_generation_prompt=add_generation_prompt)
