"""The demo's vocabulary: the Qwen BPE cut down to the tokens the demo's corpus uses, and a base model built on it.

Why: the tiny model's cost is its 151,936-row embedding and LM head, not its 64-wide body, so on two CPU cores SFT
saw too few tokens to learn to draw. With a few thousand rows a step is several times cheaper.

How: a real tokenizer, not an id map between the processor and the model. The Qwen byte-level BPE is restricted to
the tokens it produces on every text of the corpus (all splits: SFT conversations and RL prompts, chat template
included), closed under the merges that build them (every rule that makes a kept token keeps its two parts), plus
the 256 byte tokens and Qwen's added tokens. BPE applies the lowest-ranked merge present; every merge the full
tokenizer applies to corpus text builds a piece of a kept token, so it is kept too and the restricted tokenizer
picks the same merges: the same tokens on that text (tests/test_demo_vocab.py checks it on a corpus). Any other text
still encodes (down to bytes) and decodes to itself. Ids: kept BPE tokens in Qwen id order, then the added tokens
in Qwen's order. The base model is an ordinary Qwen2.5-VL HF directory whose config.json has the small vocab_size
and the remapped special ids, so SFT, ViRL, the sampler's stop ids (from the processor) and the HF export work
unchanged; `demo_vocab.json` beside it maps each id back to Qwen's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, pre_tokenizers

from vinci_jax.processing.special_tokens import (
    ENDOFTEXT,
    FIRST_SPECIAL_ID,
    IM_END,
    IMAGE_PAD,
    SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)

MAP_FILE = "demo_vocab.json"
VOCAB_MULTIPLE = 128  # the LM head's rows are rounded up to this (ids past the tokenizer's are never fed in)
SPLITS = ("train", "val", "test", "heldout")


def corpus_texts(corpus_dir: str | os.PathLike, processor: Any, splits: Sequence[str] = SPLITS) -> list[str]:
    """Every text the demo tokenizes: each record's SFT conversation and its RL prompt, as the processor renders
    them (one image pad per image; the pads' expansion repeats that token)."""
    from vinci_data.records import list_shards, read_records

    texts = []
    for split in splits:
        if not list_shards(corpus_dir, split):
            continue
        for record in read_records(corpus_dir, split):
            texts.append(processor.render(record.sft_messages()).text)
            prompt = [{"role": "user", "content": record.prompt()}]
            texts.append(processor.render(prompt, add_generation_prompt=True).text)
    return texts


def _closure(kept: set[str], merges: Sequence[Sequence[str]]) -> set[str]:
    """`kept` plus the two parts of every merge rule that builds a token in it, recursively."""
    makers: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        makers.setdefault(a + b, []).append((a, b))
    out, todo = set(kept), list(kept)
    while todo:
        for pair in makers.get(todo.pop(), ()):
            for part in pair:
                if part not in out:
                    out.add(part)
                    todo.append(part)
    return out


def compact_tokenizer(full: Tokenizer, texts: Iterable[str]) -> tuple[Tokenizer, list[int]]:
    """(restricted tokenizer, Qwen id of each compact id) for `texts`; see the module docstring."""
    spec = json.loads(full.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("ignore_merges"):
        raise ValueError("compact_tokenizer expects a byte-level BPE that applies its merges (Qwen2's)")
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    used = {i for enc in full.encode_batch(list(texts), add_special_tokens=False) for i in enc.ids}
    kept = {full.id_to_token(i) for i in used if i < FIRST_SPECIAL_ID}
    kept |= set(pre_tokenizers.ByteLevel.alphabet())
    kept = _closure(kept, merges)
    tokens = sorted(kept, key=vocab.__getitem__)
    model["vocab"] = {token: i for i, token in enumerate(tokens)}
    model["merges"] = [[a, b] for a, b in merges if a in kept and b in kept and a + b in kept]
    qwen_ids = [vocab[t] for t in tokens]
    added = sorted(spec["added_tokens"], key=lambda t: t["id"])
    for offset, token in enumerate(added):
        qwen_ids.append(token["id"])
        token["id"] = len(tokens) + offset
    spec["added_tokens"] = added
    return Tokenizer.from_str(json.dumps(spec)), qwen_ids


def write_tokenizer(directory: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """tokenizer.json + a tokenizer_config.json like the offline Qwen one's, with this tokenizer's added-token ids."""
    from vinci_jax.processing.tokenizer import tokenizer_config

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    config = tokenizer_config()
    config["added_tokens_decoder"] = {
        str(tokenizer.token_to_id(token)): entry for token, entry in (
            (entry["content"], entry) for entry in config["added_tokens_decoder"].values()
        )
    }  # fmt: skip
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def model_config(tokenizer: Tokenizer, num_layers: int = 0) -> Any:
    """The demo's tiny Qwen2.5-VL config on `tokenizer`: vocab_size rounded up, special ids remapped."""
    import dataclasses

    from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig

    base = Qwen25VLConfig.tiny()
    size = -(-tokenizer.get_vocab_size() // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    ids = {name: tokenizer.token_to_id(token) for name, token in (
        ("bos", ENDOFTEXT), ("eos", IM_END), ("image", IMAGE_PAD), ("video", VIDEO_PAD),
        ("vision_start", VISION_START), ("vision_end", VISION_END),
    )}  # fmt: skip
    if any(i is None for i in ids.values()):
        raise ValueError(f"the tokenizer lacks Qwen-VL special tokens: {ids}")
    text = dataclasses.replace(
        base.text,
        vocab_size=size,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        num_hidden_layers=num_layers or base.text.num_hidden_layers,
    )
    return dataclasses.replace(
        base,
        text=text,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )


def write_base(
    out_dir: str | os.PathLike, corpus_dir: str | os.PathLike, *, num_layers: int, seed: int, **pixels: int
) -> dict[str, Any]:
    """A random-init tiny Qwen2.5-VL HF directory on the corpus' compact vocabulary (weights float32, config,
    tokenizer, processor files, demo_vocab.json); reused when its recorded inputs match. Returns the map's summary."""
    import jax.numpy as jnp
    from flax import nnx

    from vinci_jax.models import families
    from vinci_jax.processing.tokenizer import load_tokenizer_uncached

    out_dir = os.fspath(out_dir)
    stats_path = os.path.join(os.fspath(corpus_dir), "stats.json")
    with open(stats_path) as f:
        corpus_stats = json.load(f)
    key = {"corpus": corpus_stats.get("config"), "num_layers": num_layers, "seed": seed, "pixels": pixels}
    map_path = os.path.join(out_dir, MAP_FILE)
    if os.path.isfile(map_path):
        with open(map_path) as f:
            existing = json.load(f)
        if existing.get("key") == key:
            return summary(existing)
    family = families.get_family("qwen2_5_vl")
    full = family.processor_with(None, **pixels)
    tokenizer, qwen_ids = compact_tokenizer(full.tokenizer.backend_tokenizer, corpus_texts(corpus_dir, full))
    config = model_config(tokenizer, num_layers)
    model = family.build(config, rngs=nnx.Rngs(seed), dtype=jnp.float32, param_dtype=jnp.float32)
    family.export(model, out_dir, dtype="float32")
    write_tokenizer(out_dir, tokenizer)
    family.processor_with(load_tokenizer_uncached(out_dir), **pixels).save_pretrained(out_dir)
    record = {"key": key, "vocab_size": config.text.vocab_size, "tokens": len(qwen_ids), "qwen_ids": qwen_ids}
    with open(map_path, "w") as f:
        json.dump(record, f)
    return summary(record)


def summary(record: dict[str, Any]) -> dict[str, int]:
    qwen_size = max(SPECIAL_TOKENS.values()) + 1
    return {"tokens": int(record["tokens"]), "vocab_size": int(record["vocab_size"]), "qwen_tokens": qwen_size}
