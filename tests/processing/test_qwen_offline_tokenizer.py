"""The offline Qwen2 tokenizer: same ids as tiktoken on the same ranks and as transformers' own conversion."""

from __future__ import annotations

import time
import unicodedata

import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from vinci_jax.processing import SPECIAL_TOKENS, load_tokenizer
from vinci_jax.processing.tokenizer import QWEN2_SPLIT_REGEX, offline_tokenizer_dir, qwen_tiktoken_path

# Written out from the released Qwen2.5-VL tokenizer_config.json (id, token, special flag).
OFFICIAL_ADDED_TOKENS = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]

TEXTS = [
    "Hello world! It's a test; we'll see what'S up, they'd've said.",
    'import matplotlib.pyplot as plt\n\nfig, ax = plt.subplots(figsize=(6, 4))\nax.set_title("Ünïcödé — 温度 ℃")\n',
    "def f(x):\n\tif x > 12345:\n\t\treturn '日本語テキスト' + x   # trailing spaces   \n    \n\n\n  end",
    "<svg width=\"336\" height=\"336\"><rect x='0' y='0' fill='#ff00ff'/></svg>\r\n\r\n",
    "\\documentclass{article}\n\\begin{document}$\\alpha^2 + \\beta_{i,j}$\\end{document}",
    "emoji 🤖🎨 mixed 中文English混合 1234567890 números ñ café naïve Ελληνικά русский",
    "                 many spaces\t\t\ttabs\n\n\n\n\nnewlines     ",
    "cafe\u0301 decomposes: e\u0301 a\u0308",  # NFC normalisation applies
    "",
    " leading space and trailing space ",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def tiktoken_encoding() -> tiktoken.Encoding:
    """Independent oracle: OpenAI's tiktoken on the same ranks with Qwen2's split pattern."""
    return tiktoken.Encoding(
        name="qwen2-oracle",
        pat_str=QWEN2_SPLIT_REGEX,
        mergeable_ranks=load_tiktoken_bpe(str(qwen_tiktoken_path())),
        special_tokens=dict(SPECIAL_TOKENS),
    )


def test_added_tokens_have_official_ids_and_flags(tokenizer):
    assert SPECIAL_TOKENS == {token: token_id for token_id, token, _ in OFFICIAL_ADDED_TOKENS}
    assert len(tokenizer) == 151665
    for token_id, token, special in OFFICIAL_ADDED_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
        assert (tokenizer.decode([token_id], skip_special_tokens=True) == "") == special, token
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token is None


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_encoding_matches_tiktoken_and_round_trips(tokenizer, tiktoken_encoding, index):
    text = TEXTS[index]
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == tiktoken_encoding.encode(unicodedata.normalize("NFC", text))
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_specials_inside_text_are_single_tokens(tokenizer, tiktoken_encoding):
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>Draw it.<|im_end|>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == tiktoken_encoding.encode(text, allowed_special="all")
    assert ids[:2] == [151644, 872] and ids.count(151655) == 2
    assert tokenizer.decode(ids) == text


def test_identical_to_transformers_tiktoken_conversion(tokenizer):
    """transformers' own TikTokenConverter + the same specials gives the same ids (our build adds only NFC)."""
    backend = TikTokenConverter(
        vocab_file=str(qwen_tiktoken_path()), pattern=QWEN2_SPLIT_REGEX, extra_special_tokens=list(SPECIAL_TOKENS)
    ).converted()
    reference = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert reference.get_vocab() == tokenizer.get_vocab()
    for text in TEXTS + ["<|im_start|>assistant\n```python\nprint('ok')\n```<|im_end|>"]:
        text = unicodedata.normalize("NFC", text)
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == reference.decode(ids)


def test_cached_build_is_cheap_and_checkpoint_dirs_load(tokenizer, tmp_path):
    start = time.perf_counter()
    again = load_tokenizer(None)
    assert again is tokenizer and time.perf_counter() - start < 0.5
    assert (offline_tokenizer_dir() / "tokenizer.json").is_file()

    # A directory with only tokenizer.json (full checkpoint directories are covered by the processor tests).
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path)
    text = TEXTS[1]
    assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert loaded.convert_tokens_to_ids("<|image_pad|>") == 151655
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
