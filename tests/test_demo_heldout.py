"""The demo's held-out split: distinct targets, none seen in training, stratified and interleaved by domain."""

import pytest
from vinci_data.records import Record, RecordWriter, read_records

from vinci_jax.demo_heldout import HELDOUT_SPLIT, HELDOUT_SPLITS, write_heldout


def _record(i: int, domain: str, split: str, answer: str) -> Record:
    return Record(id=f"r{i}", domain=domain, task="generate", language="svg", images=[b"png"], answer=answer,
                  problem="<image>\nWrite SVG code.", split=split)  # fmt: skip


def test_heldout_drops_train_answers_and_repeats_and_caps_each_domain(tmp_path):
    records = [
        _record(0, "svg", "train", "seen"),
        _record(1, "svg", "test", "seen"),  # in train: dropped
        _record(2, "svg", "test", "a"),
        _record(3, "svg", "test", "a"),  # repeated: dropped
        _record(4, "svg", "test", "b"),
        _record(5, "svg", "test", "c"),  # over the cap of 2
        _record(6, "chem", "test", "a"),  # same code, other domain: distinct
        _record(7, "chem", "test", "d"),
        _record(8, "web", "test", "e"),
    ]
    with RecordWriter(tmp_path) as writer:
        for record in records:
            writer.write(record)
    report = write_heldout(tmp_path, per_domain=2)
    assert report["per_domain"] == {"chem": 2, "svg": 2, "web": 1} and report["total"] == 5
    assert report["dropped"] == {"seen_in_train_or_repeated": 2, "over_per_domain": 1}
    held = list(read_records(tmp_path, HELDOUT_SPLIT))
    assert [r.id for r in held] == ["r6", "r2", "r8", "r7", "r4"]  # domains interleaved: prefixes stay stratified
    assert all(r.split == HELDOUT_SPLIT for r in held)
    assert [r.id for r in read_records(tmp_path, "train")] == ["r0"]  # the build's own splits are untouched


def test_heldout_without_test_records_fails_loudly(tmp_path):
    with RecordWriter(tmp_path) as writer:
        writer.write(_record(0, "svg", "train", "x"))
    with pytest.raises(ValueError, match="no distinct test records"):
        write_heldout(tmp_path, per_domain=4)


def test_val_heldout_shares_no_target_with_train_or_test(tmp_path):
    records = [
        _record(0, "svg", "train", "t"),
        _record(1, "svg", "test", "x"),
        _record(2, "svg", "val", "t"),  # a training target: dropped
        _record(3, "svg", "val", "x"),  # a test target: dropped
        _record(4, "svg", "val", "v"),
        _record(5, "chem", "val", "x"),  # same code, other domain: distinct
    ]
    with RecordWriter(tmp_path) as writer:
        for record in records:
            writer.write(record)
    test = write_heldout(tmp_path, per_domain=4)
    val = write_heldout(tmp_path, per_domain=4, source="val")
    assert test["total"] == 1 and val["per_domain"] == {"chem": 1, "svg": 1}
    assert val["dropped"] == {"seen_in_train_or_repeated": 2}
    held_val = list(read_records(tmp_path, HELDOUT_SPLITS["val"]))
    assert [r.id for r in held_val] == ["r5", "r4"] and {r.split for r in held_val} == {"heldout_val"}
    assert [r.id for r in read_records(tmp_path, HELDOUT_SPLIT)] == ["r1"]  # the test held-out set is kept
    with pytest.raises(ValueError, match="must be one of"):
        write_heldout(tmp_path, per_domain=4, source="train")
