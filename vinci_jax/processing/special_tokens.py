"""Qwen2 / Qwen2.5-VL special tokens at their official ids (the ids the released embeddings were trained with)."""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

FIRST_SPECIAL_ID = 151643  # = number of byte-level BPE tokens in the Qwen2 vocabulary

# Token -> official id, in id order. Every id from 151643 to 151664 appears once.
SPECIAL_TOKENS: dict[str, int] = {
    token: FIRST_SPECIAL_ID + offset
    for offset, token in enumerate(
        (
            ENDOFTEXT,
            IM_START,
            IM_END,
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            VISION_START,
            VISION_END,
            VISION_PAD,
            IMAGE_PAD,
            VIDEO_PAD,
            "<tool_call>",
            "</tool_call>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
        )
    )
}

# The official tokenizer marks the tool-call / fill-in-the-middle tokens as non-special (they survive decoding with
# skip_special_tokens=True); everything up to <|video_pad|> is special.
NON_SPECIAL_ADDED_TOKENS: frozenset[str] = frozenset(
    (
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    )
)

# additional_special_tokens of the official tokenizer_config.json.
ADDITIONAL_SPECIAL_TOKENS: tuple[str, ...] = tuple(
    t for t in SPECIAL_TOKENS if t not in NON_SPECIAL_ADDED_TOKENS and t != ENDOFTEXT
)
