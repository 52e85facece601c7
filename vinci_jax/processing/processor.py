"""QwenProcessor: chat messages + images -> model inputs and the assistant mask used for SFT labels.

The prompt text is rendered once (images expanded to their `<|image_pad|>` runs) and tokenized in one call, exactly
as transformers' Qwen2.5-VL processor does, so ids agree even where a token straddles a turn boundary. The
assistant mask comes from token character offsets against the rendered assistant spans.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from transformers import PreTrainedTokenizerFast

from vinci_jax.processing.chat_template import QWEN_VL_CHAT_TEMPLATE, RenderedChat, render_chat
from vinci_jax.processing.image_processor import ImageProcessor
from vinci_jax.processing.special_tokens import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    SPECIAL_TOKENS,
    VISION_END,
    VISION_START,
)
from vinci_jax.processing.tokenizer import load_tokenizer

CHAT_TEMPLATE_FILE = "chat_template.jinja"
PROCESSOR_CONFIG = "processor_config.json"


class QwenProcessor:
    """Qwen2.5-VL processor: the chat template, tokenizer and image processor behind one call.

    A model family with another chat format or image settings subclasses it and overrides `render`,
    `chat_template`, `processor_class` and `default_image_processor` (see `vinci_jax.processing.qwen3_vl`).
    """

    chat_template: str = QWEN_VL_CHAT_TEMPLATE
    processor_class: str = "Qwen2_5_VLProcessor"

    def __init__(self, tokenizer: PreTrainedTokenizerFast | None = None, image_processor: ImageProcessor | None = None):
        self.tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        self.image_processor = image_processor if image_processor is not None else self.default_image_processor()
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in (IM_START, IM_END, IMAGE_PAD, VISION_START, VISION_END) if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks Qwen-VL tokens {missing}; load a Qwen2-VL/2.5-VL tokenizer")
        self.image_token_id = vocab[IMAGE_PAD]
        self.vision_start_token_id = vocab[VISION_START]
        self.vision_end_token_id = vocab[VISION_END]
        self.im_start_token_id = vocab[IM_START]
        self.im_end_token_id = vocab[IM_END]
        self.eos_token_id = self.im_end_token_id  # a chat reply ends with <|im_end|>
        self.pad_token_id = vocab.get(ENDOFTEXT, SPECIAL_TOKENS[ENDOFTEXT])

    # ---- main entry -----------------------------------------------------------------------------------------

    def __call__(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image] = (),
        add_generation_prompt: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tokenize a conversation. Images fill the image slots (`<image>` markers or image parts) in order.

        Returns input_ids int32 [L], assistant_mask bool [L] (assistant replies incl. their <|im_end|>, not the
        `<|im_start|>assistant\\n` header), pixel_values float32 [P, D], image_grid_thw int64 [n, 3].
        """
        rendered = self.render(messages, add_generation_prompt=add_generation_prompt)
        images = self._match_images(rendered.image_slots, images)
        pixel_values, grid_thw = self.image_processor(images)
        text = self._expand_image_pads(rendered.text, grid_thw)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = np.asarray(encoding["input_ids"], dtype=np.int32)
        offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        spans = self._shift_spans(rendered.text, rendered.assistant_spans, grid_thw)
        return {
            "input_ids": input_ids,
            "assistant_mask": assistant_token_mask(offsets, spans),
            "pixel_values": pixel_values,
            "image_grid_thw": grid_thw,
        }

    def _match_images(self, slots: Sequence[Any], images: Sequence[Image.Image]) -> list[Image.Image]:
        if isinstance(images, Image.Image):
            images = [images]
        embedded = [slot.image for slot in slots if slot.image is not None]
        if embedded and images:
            raise ValueError("images were given both inside the messages and as `images`; use one or the other")
        chosen = list(embedded) if embedded else list(images)
        if len(chosen) != len(slots):
            raise ValueError(
                f"messages have {len(slots)} image slot(s) (<image> markers / image parts) but {len(chosen)} "
                "image(s) were given; pass one image per slot"
            )
        return chosen

    def _pad_run(self, grid: np.ndarray) -> str:
        return IMAGE_PAD * self.image_processor.num_image_tokens(grid)

    def _expand_image_pads(self, text: str, grid_thw: np.ndarray) -> str:
        pieces = text.split(IMAGE_PAD)
        if len(pieces) - 1 != len(grid_thw):
            raise ValueError(
                f"text contains {len(pieces) - 1} {IMAGE_PAD} but {len(grid_thw)} images were processed; "
                f"message text must not contain {IMAGE_PAD} literally"
            )
        out = [pieces[0]]
        for grid, piece in zip(grid_thw, pieces[1:], strict=True):
            out.append(self._pad_run(grid))
            out.append(piece)
        return "".join(out)

    def _shift_spans(self, text: str, spans: Sequence[tuple[int, int]], grid_thw: np.ndarray) -> list[tuple[int, int]]:
        """Map char spans of the compact text onto the text with image pads expanded."""
        if not spans:
            return []
        pad_starts, pos = [], text.find(IMAGE_PAD)
        while pos >= 0:
            pad_starts.append(pos)
            pos = text.find(IMAGE_PAD, pos + len(IMAGE_PAD))
        extra = np.asarray([len(self._pad_run(g)) - len(IMAGE_PAD) for g in grid_thw], dtype=np.int64)
        cumulative = np.concatenate([[0], np.cumsum(extra)])
        starts = np.asarray(pad_starts, dtype=np.int64)

        def shift(offset: int) -> int:
            return int(offset + cumulative[np.searchsorted(starts, offset, side="left")])

        return [(shift(s), shift(e)) for s, e in spans]

    # ---- family hooks ---------------------------------------------------------------------------------------

    @classmethod
    def default_tokenizer(cls) -> PreTrainedTokenizerFast:
        """The offline tokenizer of this family (used when no checkpoint directory gives one)."""
        return load_tokenizer(None)

    @classmethod
    def default_image_processor(cls) -> ImageProcessor:
        return ImageProcessor()

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> RenderedChat:
        """The chat text (one `<|image_pad|>` per image) and the assistant spans, as this family's template."""
        return render_chat(messages, add_generation_prompt=add_generation_prompt)

    # ---- text helpers ---------------------------------------------------------------------------------------

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        """Prompt text with one `<|image_pad|>` per image (as transformers' apply_chat_template renders it)."""
        return self.render(messages, add_generation_prompt=add_generation_prompt).text

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(np.asarray(ids).reshape(-1).tolist(), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Sequence[Any], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    # ---- files ----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str] | None = None) -> QwenProcessor:
        """Processor of an HF checkpoint directory; None gives the offline tokenizer and default image settings."""
        if directory is None:
            return cls(cls.default_tokenizer(), cls.default_image_processor())
        return cls(load_tokenizer(directory), ImageProcessor.from_pretrained(directory))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write tokenizer, preprocessor and chat-template files that transformers' Qwen2_5_VLProcessor loads."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = self.chat_template
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        with open(os.path.join(directory, CHAT_TEMPLATE_FILE), "w", encoding="utf-8") as f:
            f.write(self.chat_template)
        with open(os.path.join(directory, PROCESSOR_CONFIG), "w", encoding="utf-8") as f:
            json.dump({"processor_class": self.processor_class}, f, indent=2)
            f.write("\n")


def assistant_token_mask(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """True for tokens whose characters lie wholly inside one of the [start, end) spans.

    A token straddling a span start (e.g. a newline merged with the header's newline) is not the assistant's.
    """
    mask = np.zeros(len(offsets), dtype=np.bool_)
    for start, end in spans:
        mask |= (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
    return mask
