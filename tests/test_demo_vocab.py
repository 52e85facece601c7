"""The demo's vocabulary (vinci_jax/demo_vocab.py): the Qwen BPE cut down to a corpus tokenizes that corpus exactly
as Qwen does (same tokens, ids mapped), still round-trips any other text, and the base model built on it is an
ordinary HF checkpoint whose config, processor and SFT inputs agree on every id."""

import json

import numpy as np
import pytest
from vinci_data.synth import DOMAIN_REGISTRY, SynthConfig, make_candidate

from vinci_jax import demo_vocab
from vinci_jax.models import families
from vinci_jax.processing.special_tokens import IM_END, IMAGE_PAD, SPECIAL_TOKENS

PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(scope="module")
def qwen():
    return families.get_family("qwen2_5_vl").processor_with(None, **PIXELS)


def _conversations(qwen, seeds: range) -> list[str]:
    config = SynthConfig(size=1000, seed=7)  # the default corpus: all difficulty levels, every domain
    texts = []
    for i in seeds:
        c = make_candidate(config, i)
        messages = [
            {"role": "user", "content": f"<image>{c.prompt}"},
            {"role": "assistant", "content": f"```{c.domain}\n{c.code}\n```"},
        ]
        texts.append(qwen.render(messages).text)
    return texts


@pytest.fixture(scope="module")
def compact(qwen):
    seen = _conversations(qwen, range(0, 60))
    tokenizer, qwen_ids = demo_vocab.compact_tokenizer(qwen.tokenizer.backend_tokenizer, seen)
    return tokenizer, qwen_ids, seen


def test_the_corpus_tokenizes_exactly_as_with_qwen(qwen, compact):
    tokenizer, qwen_ids, seen = compact
    assert {make_candidate(SynthConfig(size=1000, seed=7), i).domain for i in range(60)} == set(DOMAIN_REGISTRY)
    full = qwen.tokenizer.backend_tokenizer
    for text, want, got in zip(
        seen,
        full.encode_batch(seen, add_special_tokens=False),
        tokenizer.encode_batch(seen, add_special_tokens=False),
        strict=True,
    ):
        assert [qwen_ids[i] for i in got.ids] == want.ids, text[:200]
    assert len(qwen_ids) == tokenizer.get_vocab_size() < 10_000  # vs 151,665: the point of it


def test_unseen_text_still_round_trips(qwen, compact):
    tokenizer, _, _ = compact
    for text in _conversations(qwen, range(500, 520)) + ["naïve 日本語 \t\n ΩΩ <|im_end|> 🙂"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_added_tokens_follow_the_bpe_tokens_in_qwen_order(compact):
    tokenizer, qwen_ids, _ = compact
    first = len(qwen_ids) - len(SPECIAL_TOKENS)
    for offset, (token, qwen_id) in enumerate(SPECIAL_TOKENS.items()):
        assert tokenizer.token_to_id(token) == first + offset
        assert qwen_ids[first + offset] == qwen_id
    assert qwen_ids[:first] == sorted(qwen_ids[:first]) and max(qwen_ids[:first]) < min(SPECIAL_TOKENS.values())


def test_base_model_config_processor_and_sft_inputs_agree_on_ids(tiny_svg_rl_corpus, tmp_path):
    import ml_collections
    from vinci_data.records import read_records

    from vinci_jax.policy import load_policy
    from vinci_jax.train.model import model_processor

    out = tmp_path / "base"
    info = demo_vocab.write_base(out, tiny_svg_rl_corpus, num_layers=1, seed=0, **PIXELS)
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == info["vocab_size"]
    assert info["vocab_size"] % demo_vocab.VOCAB_MULTIPLE == 0 and info["tokens"] <= info["vocab_size"] < 10_000
    model, processor = load_policy(out)
    assert model.config.text.vocab_size == info["vocab_size"] and model.config.text.num_hidden_layers == 1
    assert processor.image_token_id == config["image_token_id"] == processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert processor.vision_start_token_id == config["vision_start_token_id"]
    assert (
        processor.eos_token_id
        == config["text_config"]["eos_token_id"]
        == processor.tokenizer.convert_tokens_to_ids(IM_END)
    )
    # SFT tokenizes with the base's own tokenizer (model_processor), so every id has an embedding row
    sft_processor = model_processor(ml_collections.ConfigDict({"family": "", "hf_dir": str(out)}), **PIXELS)
    record = next(iter(read_records(tiny_svg_rl_corpus, "train")))
    from vinci_jax.input_pipeline.sources import open_image

    ids = sft_processor(record.sft_messages(), [open_image(b) for b in record.images])["input_ids"]
    assert ids.max() < info["tokens"] and (ids == processor.image_token_id).sum() > 0
    assert sft_processor.decode(ids).count(IMAGE_PAD) == int((ids == processor.image_token_id).sum())
    mapping = json.loads((out / demo_vocab.MAP_FILE).read_text())
    assert len(mapping["qwen_ids"]) == info["tokens"]
    qwen_ids = np.asarray(mapping["qwen_ids"])[ids]
    assert families.get_family("qwen2_5_vl").processor_with(None).decode(qwen_ids) == sft_processor.decode(ids)
    # reused while its inputs match, rebuilt when they change
    stamp = (out / "config.json").stat().st_mtime_ns
    demo_vocab.write_base(out, tiny_svg_rl_corpus, num_layers=1, seed=0, **PIXELS)
    assert (out / "config.json").stat().st_mtime_ns == stamp
    demo_vocab.write_base(out, tiny_svg_rl_corpus, num_layers=2, seed=0, **PIXELS)
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 2
