"""RL Grain pipeline: prompts with images and generation header, unique group ids, targets on host, domain mixing."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from vinci_data.records import RecordWriter

from vinci_jax.input_pipeline import RLConfig, RLLoader
from vinci_jax.processing import ImageProcessor, QwenProcessor, load_tokenizer

SMALL = dict(min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def processor():
    return QwenProcessor(load_tokenizer(None), ImageProcessor(**SMALL))


@pytest.fixture
def imbalanced_dir(tmp_path, make_records):
    """12 chart prompts, 3 svg prompts, 3 web prompts."""
    records = make_records(18, seed=5)
    for i, record in enumerate(records):
        record.domain = "chart" if i < 12 else ("svg" if i < 15 else "web")
        record.messages = []  # RL-only records: problem + answer
    with RecordWriter(tmp_path / "rl", num_shards=2) as writer:
        for record in records:
            writer.write(record)
    return str(tmp_path / "rl"), {r.id: r for r in records}


def test_prompts_carry_images_generation_header_targets_and_unique_groups(imbalanced_dir, processor):
    data_dir, by_id = imbalanced_dir
    loader = RLLoader(RLConfig(data_dir=data_dir, prompts_per_batch=4, **SMALL), processor)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 18 prompts, drop remainder
    group_ids = np.concatenate([b.group_ids for b in batches])
    assert len(set(group_ids.tolist())) == len(group_ids)
    for batch in batches:
        for i, prompt in enumerate(batch.prompts):
            record = by_id[batch.ids[i]]
            text = processor.decode(prompt["input_ids"])
            assert text.endswith("<|im_start|>assistant\n") and "<|vision_start|>" in text
            assert batch.target_pngs[i] == record.images[0] and batch.answers[i] == record.answer
            assert batch.domains[i] == record.domain and batch.languages[i] == "python"
            assert prompt["image_grid_thw"].shape == (len(record.images), 3)
            assert prompt["pixel_values"].shape[0] == int(np.prod(prompt["image_grid_thw"], axis=1).sum())
        assert batch.target_images()[0].mode == "RGB"


def test_balanced_weights_oversample_small_domains(imbalanced_dir, processor):
    data_dir, _ = imbalanced_dir
    natural = collections.Counter()
    for batch in RLLoader(RLConfig(data_dir=data_dir, prompts_per_batch=3, **SMALL), processor):
        natural.update(batch.domains)
    assert natural == {"chart": 12, "svg": 3, "web": 3}
    balanced = collections.Counter()
    loader = RLLoader(RLConfig(data_dir=data_dir, prompts_per_batch=3, domain_weights="balanced", **SMALL), processor)
    assert loader.domain_sizes == {"chart": 12, "svg": 3, "web": 3}
    for _ in range(10):
        balanced.update(next(loader).domains)
    assert all(8 <= balanced[d] <= 12 for d in ("chart", "svg", "web")), balanced
    only_svg = RLLoader(
        RLConfig(data_dir=data_dir, prompts_per_batch=3, domain_weights={"svg": 1.0, "chart": 0.0}, **SMALL), processor
    )
    assert set(next(only_svg).domains) == {"svg"}


def test_rl_iterator_state_resumes(imbalanced_dir, processor):
    data_dir, _ = imbalanced_dir
    config = RLConfig(data_dir=data_dir, prompts_per_batch=2, domain_weights="balanced", seed=7, **SMALL)
    loader = RLLoader(config, processor)
    next(loader)
    state = loader.get_state()
    want = [next(loader) for _ in range(3)]
    resumed = RLLoader(config, processor)
    resumed.set_state(state)
    for batch in want:
        got = next(resumed)
        assert got.ids == batch.ids and np.array_equal(got.group_ids, batch.group_ids)


def test_rl_batch_feeds_the_sampler_prompt_batch(imbalanced_dir, processor):
    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig

    data_dir, _ = imbalanced_dir
    batch = next(RLLoader(RLConfig(data_dir=data_dir, prompts_per_batch=3, **SMALL), processor))
    prompt_batch = batch.prompt_batch(Qwen25VLConfig.tiny(), processor.pad_token_id)
    lengths = [len(p["input_ids"]) for p in batch.prompts]
    np.testing.assert_array_equal(prompt_batch.prompt_lengths, lengths)
    assert prompt_batch.vision_inputs is not None
