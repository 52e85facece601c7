"""SFT Grain pipeline: assistant-only labels, packing with per-segment positions, drop/truncate, state, loss parity."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from vinci_data.records import read_records

from vinci_jax import sharding
from vinci_jax.input_pipeline import SFTConfig, SFTFeaturizer, SFTLoader, vision_inputs_for_batch
from vinci_jax.input_pipeline.sft import default_processor
from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index

SMALL_IMAGES = dict(min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def processor():
    return default_processor(SFTConfig(data_dir="", **SMALL_IMAGES))


def _config(data_dir: str, **overrides) -> SFTConfig:
    base = dict(data_dir=data_dir, seq_len=320, batch_size=2, patches_per_row=512, images_per_row=6, shuffle=False)
    return SFTConfig(**{**base, **SMALL_IMAGES, **overrides})


def test_labels_cover_exactly_the_assistant_tokens(record_dir, processor):
    data_dir = record_dir(4)
    featurizer = SFTFeaturizer(processor, _config(data_dir))
    for record in read_records(data_dir):
        sample = featurizer.featurize(record)
        ids, targets, mask = sample["input_ids"], sample["targets"], sample["loss_mask"] > 0
        # the loss is on predicting exactly the assistant's tokens: its reply plus the closing <|im_end|>
        reply = record.messages[-1]["content"]
        assert processor.decode(targets[mask]) == reply + "<|im_end|>"
        # and those tokens are the tail of the sequence after the assistant header, in order
        first = int(np.flatnonzero(mask)[0]) + 1
        np.testing.assert_array_equal(targets[mask], ids[first : first + int(mask.sum())])
        assert not mask[: first - 1].any()
        user_text = processor.decode(ids[:first])
        assert (
            user_text.endswith("<|im_start|>assistant\n") and record.messages[0]["content"].split("\n")[-1] in user_text
        )


def test_packed_rows_keep_samples_apart_with_their_own_positions(record_dir, processor):
    data_dir = record_dir(10)
    config = _config(data_dir)
    loader = SFTLoader(config, processor)
    featurizer = SFTFeaturizer(processor, config)
    samples = [featurizer.featurize(r) for r in read_records(data_dir)]
    by_tokens = {s["input_ids"].tobytes(): s for s in samples}
    batch = next(loader)
    assert batch["input_ids"].shape == (2, 320) and batch["position_ids"].shape == (3, 2, 320)
    assert batch["pixel_values"].shape == (2, 512, 1176) and batch["image_grid_thw"].shape == (2, 6, 3)
    packed_any = False
    for row in range(2):
        segments = [s for s in np.unique(batch["segment_ids"][row]) if s > 0]
        packed_any |= len(segments) > 1
        grids, patch_offset = [], 0
        for seg in segments:
            where = batch["segment_ids"][row] == seg
            assert np.all(np.diff(np.flatnonzero(where)) == 1), "a sample must be contiguous in its row"
            sample = by_tokens[batch["input_ids"][row, where].tobytes()]
            np.testing.assert_array_equal(batch["position_ids"][:, row, where], sample["positions"].T)
            np.testing.assert_array_equal(batch["targets"][row, where], sample["targets"])
            np.testing.assert_array_equal(batch["loss_mask"][row, where], sample["loss_mask"])
            n = len(sample["pixel_values"])
            np.testing.assert_array_equal(
                batch["pixel_values"][row, patch_offset : patch_offset + n], sample["pixel_values"]
            )
            patch_offset += n
            grids += list(sample["image_grid_thw"])
        np.testing.assert_array_equal(batch["image_grid_thw"][row, : len(grids)], np.asarray(grids))
        assert not batch["image_grid_thw"][row, len(grids) :].any()
        assert not batch["loss_mask"][row][batch["segment_ids"][row] == 0].any()
        # per-segment positions are what the model engineer's packed rope index computes for the whole row
        expected, _ = get_rope_index(
            batch["input_ids"][row : row + 1],
            np.asarray(grids),
            image_token_id=processor.image_token_id,
            segment_ids=batch["segment_ids"][row : row + 1],
        )
        real = batch["segment_ids"][row] > 0
        np.testing.assert_array_equal(batch["position_ids"][:, row, real], expected[:, 0, real])
    assert packed_any, "with 320-token rows and ~60-150-token samples, some row must hold several samples"


def test_overlong_samples_are_dropped_or_truncated_and_counted(record_dir, processor):
    data_dir = record_dir(8)
    lengths = [
        len(SFTFeaturizer(processor, _config(data_dir)).featurize(r)["input_ids"]) for r in read_records(data_dir)
    ]
    seq_len = int(np.median(lengths))
    over = sum(length > seq_len for length in lengths)
    dropping = SFTLoader(_config(data_dir, seq_len=seq_len, packing=False, batch_size=1), processor)
    kept = list(dropping)
    assert dropping.counts["dropped_overlong"] == over and len(kept) == len(lengths) - over
    assert all(b["input_ids"].shape == (1, seq_len) for b in kept)
    truncating = SFTLoader(
        _config(data_dir, seq_len=seq_len, packing=False, batch_size=1, overlong="truncate"), processor
    )
    rows = list(truncating)
    assert truncating.counts["truncated"] + truncating.counts.get("dropped_overlong", 0) == over
    assert truncating.counts["truncated"] > 0 and len(rows) == len(lengths) - truncating.counts.get(
        "dropped_overlong", 0
    )
    assert all(int(b["segment_ids"].sum()) <= seq_len for b in rows)


def test_padding_mode_uses_the_smallest_fitting_bucket(record_dir, processor):
    data_dir = record_dir(6)
    loader = SFTLoader(_config(data_dir, packing=False, batch_size=2, length_buckets=(128, 192, 256)), processor)
    for batch in loader:
        longest = int((batch["segment_ids"] > 0).sum(axis=1).max())
        length = batch["input_ids"].shape[1]
        assert length == min(b for b in (128, 192, 256, 320) if b >= longest)


def test_iterator_state_resumes_on_the_exact_next_batch(record_dir, processor):
    data_dir = record_dir(12)
    config = _config(data_dir, shuffle=True, seed=3, num_epochs=None)
    loader = SFTLoader(config, processor)
    next(loader)
    state = loader.get_state()
    expected = [next(loader) for _ in range(3)]
    resumed = SFTLoader(config, processor)
    resumed.set_state(json.loads(json.dumps(state)))  # the trainer stores it as JSON
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_batches_become_global_arrays_over_the_mesh(record_dir, processor):
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
    config = _config(record_dir(16), batch_size=8, seq_len=256, patches_per_row=256, num_epochs=None)
    loader = SFTLoader(config, processor, mesh=mesh)
    batch = next(loader)
    assert isinstance(batch["input_ids"], jax.Array) and batch["input_ids"].shape == (8, 256)
    assert batch["input_ids"].sharding.spec[0] == ("data", "fsdp")
    assert batch["position_ids"].shape == (3, 8, 256) and batch["position_ids"].sharding.spec[1] == ("data", "fsdp")
    assert len(batch["input_ids"].addressable_shards) == 8


@nnx.jit
def _token_logp(model, input_ids, position_ids, targets, segment_ids, vision_inputs):
    logits = model(input_ids, position_ids, segment_ids=segment_ids, vision_inputs=vision_inputs)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def _unpacked_rows(samples: list[dict], seq_len: int) -> dict[str, np.ndarray]:
    """One sample per row, right-padded: the same array shapes as a packed batch, so one compilation serves both."""
    rows = len(samples)
    out = {
        "input_ids": np.zeros((rows, seq_len), np.int32),
        "targets": np.zeros((rows, seq_len), np.int32),
        "segment_ids": np.zeros((rows, seq_len), np.int32),
        "position_ids": np.zeros((3, rows, seq_len), np.int32),
        "pixel_values": np.zeros((rows, max(len(s["pixel_values"]) for s in samples), 1176), np.float32),
        "image_grid_thw": np.zeros((rows, max(len(s["image_grid_thw"]) for s in samples), 3), np.int32),
    }
    for r, s in enumerate(samples):
        n = len(s["input_ids"])
        out["input_ids"][r, :n], out["targets"][r, :n], out["segment_ids"][r, :n] = s["input_ids"], s["targets"], 1
        out["position_ids"][:, r, :n] = s["positions"].T
        out["pixel_values"][r, : len(s["pixel_values"])] = s["pixel_values"]
        out["image_grid_thw"][r, : len(s["image_grid_thw"])] = s["image_grid_thw"]
    return out


def test_packed_batch_gives_the_same_per_sample_loss_as_unpacked(record_dir, processor):
    """The real tiny Qwen2.5-VL sees each sample alone (one per row) and packed with others: same loss per sample."""
    from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig
    from vinci_jax.models.qwen2_5_vl.modeling import Qwen25VLForConditionalGeneration

    seq_len, vision_bucket = 384, 2048  # one text shape and one vision shape: a single compilation

    def loss_per_segment(batch: dict[str, np.ndarray]) -> dict[bytes, float]:
        logp = _token_logp(
            model,
            *(jnp.asarray(batch[k]) for k in ("input_ids", "position_ids", "targets", "segment_ids")),
            jax.tree.map(jnp.asarray, vision_inputs_for_batch(batch, model_config.vision, bucket_sizes=vision_bucket)),
        )
        token_loss, out = -np.asarray(logp), {}
        for row in range(batch["input_ids"].shape[0]):
            for seg in [s for s in np.unique(batch["segment_ids"][row]) if s > 0]:
                where = batch["segment_ids"][row] == seg
                weights = batch["loss_mask"][row, where]
                loss = (token_loss[row, where] * weights).sum() / weights.sum()
                out[batch["input_ids"][row, where].tobytes()] = float(loss)
        return out

    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        model_config = Qwen25VLConfig.tiny()
        model = Qwen25VLForConditionalGeneration(model_config, rngs=nnx.Rngs(0))
        data_dir = record_dir(6)
        config = _config(data_dir, seq_len=seq_len, patches_per_row=640)
        featurizer = SFTFeaturizer(processor, config)
        samples = [featurizer.featurize(r) for r in read_records(data_dir)]
        unpacked = {}
        for pair in (samples[0:2], samples[2:4], samples[4:6]):
            rows = _unpacked_rows(pair, seq_len)
            rows["loss_mask"] = np.zeros((2, seq_len), np.float32)
            for r, s in enumerate(pair):
                rows["loss_mask"][r, : len(s["loss_mask"])] = s["loss_mask"]
            unpacked |= loss_per_segment(rows)
        packed = loss_per_segment(next(SFTLoader(config, processor)))
        assert len(packed) >= 3 and set(packed) <= set(unpacked)
        for tokens, loss in packed.items():
            np.testing.assert_allclose(loss, unpacked[tokens], rtol=1e-5)
    finally:
        jax.config.update("jax_default_matmul_precision", None)
