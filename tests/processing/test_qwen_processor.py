"""QwenProcessor against transformers' Qwen2_5_VLProcessor loaded from the directory our processor saved."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import Qwen2_5_VLProcessor

from vinci_jax.processing import ImageProcessor, QwenProcessor, load_tokenizer
from vinci_jax.processing.chat_template import to_hf_messages

IM_END_ID = 151645


class ImageOnlyQwen25VLProcessor(Qwen2_5_VLProcessor):
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
    directory = tmp_path_factory.mktemp("qwen_processor")
    QwenProcessor(load_tokenizer(None), ImageProcessor()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ours(saved_dir) -> QwenProcessor:
    return QwenProcessor.from_pretrained(saved_dir)


@pytest.fixture(scope="module")
def reference(saved_dir) -> ImageOnlyQwen25VLProcessor:
    return ImageOnlyQwen25VLProcessor.from_pretrained(saved_dir)


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
    "ms_swift_placeholders_default_system_generation_prompt": (
        [{"role": "user", "content": "<image>\nRender this as SVG code. <image>"}],
        [image(3, 5, 9), image(4, 1500, 1999)],  # min_pixels and max_pixels both hit
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

    assert got["input_ids"].dtype == np.int32 and got["assistant_mask"].dtype == np.bool_
    np.testing.assert_array_equal(got["input_ids"], expected["input_ids"][0])
    if images:
        np.testing.assert_array_equal(got["image_grid_thw"], expected["image_grid_thw"])
        np.testing.assert_array_equal(got["pixel_values"], expected["pixel_values"])
        merged = int(got["image_grid_thw"].prod(axis=1).sum()) // 4
        assert int((got["input_ids"] == ours.image_token_id).sum()) == merged
    else:
        assert got["pixel_values"].shape == (0, 1176) and got["image_grid_thw"].shape == (0, 3)


def test_hf_style_parts_with_embedded_images_equal_separate_images(ours):
    images = [image(7, 64, 64), image(8, 90, 30)]
    embedded = [
        {"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]}]}
    ]
    separate = [{"role": "user", "content": "<image><image>"}]
    a, b = ours(embedded), ours(separate, images)
    for key in ("input_ids", "assistant_mask", "pixel_values", "image_grid_thw"):
        np.testing.assert_array_equal(a[key], b[key])


def assistant_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def test_assistant_mask_covers_exactly_the_replies(ours):
    replies = ["First answer with code:\n```python\nprint(1)\n```", "Second  answer 🎨\n"]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>Describe."},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": replies[1]},
    ]
    out = ours(messages, [image(9, 56, 56)])
    ids, mask = out["input_ids"], out["assistant_mask"]
    runs = assistant_runs(mask)
    assert len(runs) == 2
    for (start, end), reply in zip(runs, replies, strict=True):
        assert ours.decode(ids[start:end]) == reply + "<|im_end|>"
        assert ids[end - 1] == IM_END_ID
        # Immediately before each reply sits the header <|im_start|>assistant\n, which is not masked.
        assert ours.decode(ids[start - 3 : start]) == "<|im_start|>assistant\n"
    # Nothing outside the replies: system, user turns and image tokens are all unmasked.
    assert not mask[ids == ours.image_token_id].any()
    assert int(mask.sum()) == sum(end - start for start, end in runs)


def test_assistant_mask_with_generation_prompt_and_leading_newline(ours):
    out = ours([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert not out["assistant_mask"].any()
    assert ours.decode(out["input_ids"][-3:]) == "<|im_start|>assistant\n"
    # A reply starting with a newline merges with the header's newline into one token, which stays unmasked.
    out = ours([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nok"}])
    ((start, end),) = assistant_runs(out["assistant_mask"])
    assert ours.decode(out["input_ids"][start - 1 : end]) == "\n\nok<|im_end|>"


def test_saved_directory_reloads_to_the_same_processor(ours, saved_dir):
    """`ours` was loaded from the directory save_pretrained wrote; it must behave like the in-memory original."""
    original = QwenProcessor(load_tokenizer(None), ImageProcessor())
    written = {p.name for p in saved_dir.iterdir()}
    assert written >= {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.jinja"}
    assert ours.image_processor == original.image_processor
    messages, images, _ = CASES["rgba_greyscale_multi_turn"]
    a, b = ours(messages, images), original(messages, images)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert original.decode(a["input_ids"]) == ours.decode(a["input_ids"])
    assert "<|im_end|>" not in ours.decode(a["input_ids"], skip_special_tokens=True)


def test_bad_inputs_raise_clear_errors(ours):
    with pytest.raises(ValueError, match="2 image slot"):
        ours([{"role": "user", "content": "<image><image>"}], [image(0, 28, 28)])
    with pytest.raises(ValueError, match="role"):
        ours([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="video"):
        ours([{"role": "user", "content": [{"type": "video"}]}])
