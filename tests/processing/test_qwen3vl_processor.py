"""Qwen3VLProcessor against transformers' Qwen3VLProcessor loaded from the directory our processor saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from transformers import Qwen3VLProcessor as HFQwen3VLProcessor

from vinci_jax.processing import QwenProcessor, load_tokenizer
from vinci_jax.processing.chat_template import to_hf_messages
from vinci_jax.processing.qwen3_vl import Qwen3VLProcessor, qwen3_vl_image_processor

IM_END_ID = 151645


class ImageOnlyQwen3VLProcessor(HFQwen3VLProcessor):
    """transformers' processor without the video processor (that one needs torchvision, absent here)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def image(seed: int, height: int, width: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3vl_processor")
    # small max_pixels so the test images hit both resize limits without megapixel arrays
    Qwen3VLProcessor(image_processor=qwen3_vl_image_processor(max_pixels=32 * 32 * 64)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ours(saved_dir) -> Qwen3VLProcessor:
    return Qwen3VLProcessor.from_pretrained(saved_dir)


@pytest.fixture(scope="module")
def reference(saved_dir) -> ImageOnlyQwen3VLProcessor:
    return ImageOnlyQwen3VLProcessor.from_pretrained(saved_dir)


CASES = {
    "system_user_assistant_two_images": (
        [
            {"role": "system", "content": "You write matplotlib code."},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "Compare with "},
                    {"type": "image"},
                    {"type": "text", "text": " and write code."},
                ],
            },
            {"role": "assistant", "content": "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```"},
        ],
        [image(1, 37, 91), image(2, 333, 222)],
        False,
    ),
    "no_default_system_generation_prompt": (
        [{"role": "user", "content": "<image>\nRender this as SVG code. <image>"}],
        [image(3, 5, 9), image(4, 700, 900)],  # min_pixels and max_pixels both hit
        True,
    ),
    "rgba_greyscale_multi_turn": (
        [
            {"role": "user", "content": "<image>What is it?"},
            {"role": "assistant", "content": "A chart  with   spaces.\n\n"},
            {"role": "user", "content": [{"type": "text", "text": "And this? "}, {"type": "image"}]},
            {"role": "assistant", "content": "\n<svg>🎨 温度</svg>"},
        ],
        [image(5, 50, 61, "RGBA"), image(6, 70, 45, "L")],
        False,
    ),
    "text_only": ([{"role": "user", "content": "Write LaTeX for $x^2$."}], [], True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_identical_to_transformers(ours, reference, case):
    messages, images, add_generation_prompt = CASES[case]
    text = reference.apply_chat_template(
        to_hf_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == text
    expected = reference(text=[text], images=images or None, return_tensors="np")
    got = ours(messages, images, add_generation_prompt=add_generation_prompt)

    np.testing.assert_array_equal(got["input_ids"], expected["input_ids"][0])
    # transformers 5.24 marks image tokens for the 3-D positions; ours are the image_token_id positions
    np.testing.assert_array_equal(got["input_ids"] == ours.image_token_id, expected["mm_token_type_ids"][0] == 1)
    if images:
        np.testing.assert_array_equal(got["image_grid_thw"], expected["image_grid_thw"])
        np.testing.assert_array_equal(got["pixel_values"], expected["pixel_values"])
        assert got["pixel_values"].shape[1] == 3 * 2 * 16 * 16
    else:
        assert got["pixel_values"].shape == (0, 1536) and got["image_grid_thw"].shape == (0, 3)


def test_chat_format_differs_from_qwen25_only_where_the_templates_do(ours):
    messages = [{"role": "user", "content": "hi"}]
    qwen25 = QwenProcessor(ours.tokenizer).apply_chat_template(messages, add_generation_prompt=True)
    qwen3 = ours.apply_chat_template(messages, add_generation_prompt=True)
    assert qwen25 == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + qwen3
    assert qwen3 == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_assistant_mask_covers_exactly_the_replies(ours):
    replies = ["First answer:\n```python\nprint(1)\n```", "Second  answer 🎨\n"]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>Describe."},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": replies[1]},
    ]
    out = ours(messages, [image(9, 64, 64)])
    ids, mask = out["input_ids"], out["assistant_mask"]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    assert len(runs) == 2
    for (start, end), reply in zip(runs, replies, strict=True):
        assert ours.decode(ids[start:end]) == reply + "<|im_end|>"
        assert ids[end - 1] == IM_END_ID
    assert not mask[ids == ours.image_token_id].any()


def test_saved_files_name_the_qwen3_processor(ours, saved_dir):
    assert json.loads((saved_dir / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"
    config = json.loads((saved_dir / "preprocessor_config.json").read_text())
    assert (config["patch_size"], config["merge_size"], config["image_mean"]) == (16, 2, [0.5, 0.5, 0.5])
    assert ours.image_processor == qwen3_vl_image_processor(max_pixels=32 * 32 * 64)
    assert Qwen3VLProcessor(ours.tokenizer).image_processor.min_pixels == 65536


def test_template_drops_are_errors_not_silent(ours):
    with pytest.raises(ValueError, match="leading system"):
        ours([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    with pytest.raises(ValueError, match="assistant turns"):
        ours([{"role": "assistant", "content": "<image>"}], [image(0, 32, 32)])
    with pytest.raises(ValueError, match="role"):
        ours([{"role": "tool", "content": "x"}])


def test_offline_tokenizer_has_qwen3_added_tokens_without_touching_qwen25s(ours, reference):
    text = "<think>\nplan</think>\n\n<tool_response>ok</tool_response>"
    ids = ours.tokenizer(text)["input_ids"]
    assert ids == reference.tokenizer(text)["input_ids"]  # the saved files carry them too
    assert [i for i in ids if i >= 151665] == [151667, 151668, 151665, 151666]
    assert ours.decode(ids, skip_special_tokens=True) == text  # not special, like the released tokenizer
    assert len(load_tokenizer(None)) == 151665  # the shared Qwen2.5 tokenizer is not mutated
