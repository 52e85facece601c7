"""3-D rope positions: numpy port against transformers' get_rope_index, plus packed rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index, text_position_ids

IMG, START, END = 90, 91, 92


@pytest.fixture(scope="module")
def hf_get_rope_index():
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=100, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[1, 1, 2])),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16),
        image_token_id=IMG, video_token_id=93, vision_start_token_id=START, vision_end_token_id=END,
    )  # fmt: skip
    model = Qwen2_5_VLModel(config)

    def run(ids, grids, mask):
        pos, delta = model.get_rope_index(
            torch.from_numpy(ids),
            torch.from_numpy((ids == IMG).astype(np.int64)),
            torch.from_numpy(grids) if grids is not None else None,
            attention_mask=torch.from_numpy(mask) if mask is not None else None,
        )
        return pos.numpy(), delta.numpy()

    return run


def make_rows(specs, left_pad, rng):
    """specs: per row a list of ints (text run length) and (t, h, w) tuples (images)."""
    rows, grids = [], []
    for spec in specs:
        ids = []
        for part in spec:
            if isinstance(part, int):
                ids += rng.integers(0, 80, part).tolist()
            else:
                grids.append(part)
                ids += [START] + [IMG] * (part[0] * part[1] * part[2] // 4) + [END]
        rows.append(ids)
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for b, r in enumerate(rows):
        cols = slice(length - len(r), length) if left_pad else slice(0, len(r))
        ids[b, cols], mask[b, cols] = r, 1
    return ids, (np.asarray(grids, np.int64) if grids else None), mask


SPECS = [
    [[3, (1, 4, 6), 2, (1, 6, 2), 5], [4, (2, 2, 4), 1], [7]],  # several images per row, a temporal grid, text only
    [[(1, 10, 4), 1], [2, (1, 2, 2), (1, 4, 4), 3]],  # image first, two images separated only by end/start tokens
]


@pytest.mark.parametrize("left_pad", [True, False])
@pytest.mark.parametrize("spec", range(len(SPECS)))
def test_matches_transformers(hf_get_rope_index, spec, left_pad):
    ids, grids, mask = make_rows(SPECS[spec], left_pad, np.random.default_rng(spec))
    want_pos, want_delta = hf_get_rope_index(ids, grids, mask)
    pos, delta = get_rope_index(ids, grids, mask, image_token_id=IMG, spatial_merge_size=2)
    assert pos.dtype == np.int32 and pos.shape == (3, *ids.shape)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_array_equal(delta, want_delta)


def test_packed_rows_restart_positions_per_sample():
    rng = np.random.default_rng(0)
    ids, grids, mask = make_rows(SPECS[0], False, rng)
    separate, deltas = get_rope_index(ids, grids, mask, image_token_id=IMG)
    real = [np.flatnonzero(m) for m in mask]
    packed = np.concatenate([ids[b, real[b]] for b in range(3)] + [np.zeros(4, np.int64)])[None]
    segments = np.concatenate([np.full(len(real[b]), b + 1) for b in range(3)] + [np.zeros(4, np.int64)])[None]
    pos, delta = get_rope_index(packed, grids, image_token_id=IMG, segment_ids=segments)
    want = np.concatenate([separate[:, b, real[b]] for b in range(3)] + [np.zeros((3, 4), np.int32)], axis=1)
    np.testing.assert_array_equal(pos[:, 0], want)
    assert delta[0, 0] == deltas[2, 0]  # the last sample's delta


def test_text_positions_continue_after_the_prompt():
    ids, grids, mask = make_rows([[3, (1, 4, 4), 2]], False, np.random.default_rng(1))
    pos, delta = get_rope_index(ids, grids, mask, image_token_id=IMG)
    nxt = text_position_ids(np.array([ids.shape[1] + delta[0, 0]]), 2)
    assert nxt.shape == (3, 1, 2)
    np.testing.assert_array_equal(nxt[:, 0, 0], [pos.max() + 1] * 3)


def test_token_grid_mismatch_is_reported():
    ids = np.array([[1, START, IMG, IMG, END, 2]])
    with pytest.raises(ValueError, match="row 0.*2 vision tokens.*needs 4"):
        get_rope_index(ids, np.array([[1, 4, 4]]), image_token_id=IMG)
    with pytest.raises(ValueError, match="more runs of image tokens"):
        get_rope_index(ids, None, image_token_id=IMG)
