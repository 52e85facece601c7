"""The corpora as a TFDS dataset without TensorFlow: builder configs per domain and task, `tfds.builder(...).info`,
`tfds.data_source`, and the Grain SFT / RL pipelines reading through it; held-out splits fall back with a warning."""

from __future__ import annotations

import sys

import pytest
import tensorflow_datasets as tfds
from vinci_data.records import RecordWriter, decode_record, read_records
from vinci_data.tfds_builder import NAME, VinciCoder, build_tfds

from vinci_jax.data.__main__ import main as data_cli
from vinci_jax.input_pipeline import RLConfig, RLLoader, SFTConfig, SFTLoader, sources
from vinci_jax.input_pipeline.sft import default_processor

SMALL = dict(min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.fixture
def mixed_dir(tmp_path, make_records):
    """8 chart records (train 6, test 2, refine every 4th) and 3 svg records (train), SFT + RL fields."""
    records = make_records(11, seed=3)
    for i, record in enumerate(records):
        record.domain = "chart" if i < 8 else "svg"
        record.task = "refine" if i % 4 == 3 else "generate"
        record.split = "test" if i in (1, 6) else "train"
    with RecordWriter(tmp_path / "records", num_shards=2) as writer:
        for record in records:
            writer.write(record)
    return tmp_path / "records", records


def test_builder_writes_configs_info_and_a_data_source_without_tensorflow(tmp_path, mixed_dir, capsys):
    src, records = mixed_dir
    assert data_cli(["tfds", str(src), "--out", str(tmp_path / "tfds")]) == 0
    assert "tensorflow" not in sys.modules  # TFDS's no-TF path all the way
    built = build_tfds(src, tmp_path / "tfds", configs=["chart-refine"])["configs"]
    assert built["chart-refine"]["splits"] == {"train": 2}

    info = tfds.builder(f"{NAME}/all", data_dir=str(tmp_path / "tfds")).info
    assert str(info.version) == str(VinciCoder.VERSION) and info.splits["train"].num_examples == 9
    assert info.splits["test"].num_examples == 2 and "record" in info.features
    chart = tfds.builder(f"{NAME}/chart-generate", data_dir=str(tmp_path / "tfds")).info
    assert {s: chart.splits[s].num_examples for s in chart.splits} == {"train": 4, "test": 2}
    assert not (tmp_path / "tfds" / NAME / "web-generate").exists()  # empty slices are not built by default

    source = tfds.data_source(f"{NAME}/all", data_dir=str(tmp_path / "tfds"), split="train")
    by_id = {r.id: r for r in records}
    got = [decode_record(source[i]["record"]) for i in range(len(source))]
    assert sorted(r.id for r in got) == sorted(r.id for r in records if r.split == "train")
    for record in got:
        assert record.images == by_id[record.id].images and record.messages == by_id[record.id].messages
    assert {source[i]["domain"] for i in range(len(source))} == {b"chart", b"svg"}


def test_sft_and_rl_pipelines_read_through_the_tfds_source(tmp_path, mixed_dir):
    src, records = mixed_dir
    built = build_tfds(src, tmp_path / "tfds", configs=["all"])["configs"]["all"]
    version_dir = built["dir"]
    assert isinstance(sources.array_record_source(version_dir, "train"), sources.TfdsRecordSource)
    ids = {decode_record(raw).id for raw in sources.array_record_source(version_dir, "train")}
    assert ids == {r.id for r in read_records(src, "train")}

    processor = default_processor(SFTConfig(data_dir="", **SMALL))
    config = SFTConfig(data_dir=version_dir, seq_len=320, batch_size=2, patches_per_row=512, images_per_row=6,
                       shuffle=False, **SMALL)  # fmt: skip
    batch = next(iter(SFTLoader(config, processor)))
    assert batch["input_ids"].shape[0] == 2 and batch["loss_mask"].sum() > 0

    rl = RLLoader(RLConfig(data_dir=version_dir, prompts_per_batch=2, split="test", **SMALL), processor)
    held_out = next(iter(rl))
    assert len(held_out) == 2 and set(held_out.domains) == {"chart"}


def test_missing_held_out_split_falls_back_with_a_warning(record_dir, caplog):
    data_dir = record_dir(4)  # train only, as a conversion without --test-fraction writes
    with caplog.at_level("WARNING"):
        assert sources.resolve_split(data_dir, "test") == "train"
    assert any("split 'test' is not in" in r.getMessage() for r in caplog.records)
    assert len(sources.array_record_source(data_dir, "test")) == 4
    with pytest.raises(FileNotFoundError, match="no 'nope' records"):
        sources.array_record_source(data_dir, "nope")
