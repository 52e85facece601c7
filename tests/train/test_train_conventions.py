"""Host-side conventions of the trainer: label shifting, micro-batch stacking, schedules, freeze groups."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from vinci_jax.train import data as data_lib
from vinci_jax.train import optimizer as opt_lib


def test_hf_labels_become_shifted_targets_that_never_cross_a_packing_boundary():
    ids = np.array([[5, 6, 7, 8, 9, 10, 0]], np.int32)
    labels = np.array([[-100, -100, 7, 8, -100, 10, -100]])
    seg = np.array([[1, 1, 1, 1, 2, 2, 0]], np.int32)
    out = data_lib.to_trainer_convention({"input_ids": ids, "labels": labels, "segment_ids": seg})
    assert "labels" not in out
    # position t predicts labels[t + 1]; t=3 -> label at t=4 is ignored anyway, t=4 -> 10 inside segment 2
    np.testing.assert_array_equal(out["loss_mask"], [[0, 1, 1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(out["targets"], [[0, 7, 8, 0, 10, 0, 0]])


def test_labels_across_segments_are_masked():
    labels = np.array([[1, 2, 3, 4]])
    seg = np.array([[1, 1, 2, 2]])
    out = data_lib.to_trainer_convention({"input_ids": labels, "labels": labels, "segment_ids": seg})
    np.testing.assert_array_equal(out["loss_mask"], [[1, 0, 1, 0]])  # t=1 would predict segment 2's first token


def test_micro_batches_of_different_shapes_are_refused_with_the_shapes():
    a = {"input_ids": np.zeros((2, 8)), "vision": np.zeros((16, 3))}
    b = {"input_ids": np.zeros((2, 8)), "vision": np.zeros((32, 3))}
    assert data_lib.stack_micro_batches([a, a])["vision"].shape == (2, 16, 3)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        data_lib.stack_micro_batches([a, b])


def _opt(**kw) -> ml_collections.ConfigDict:
    base = {"learning_rate": 1.0, "schedule": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1}
    return ml_collections.ConfigDict({**base, **kw})


def test_warmup_then_cosine_and_constant_schedules():
    cosine = opt_lib.make_schedule(_opt(), num_steps=14)
    np.testing.assert_allclose([cosine(s) for s in (0, 2, 4, 9, 14)], [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)
    constant = opt_lib.make_schedule(_opt(schedule="constant"), num_steps=14)
    np.testing.assert_allclose([constant(s) for s in (2, 4, 100)], [0.5, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="linear"):
        opt_lib.make_schedule(_opt(schedule="linear"), num_steps=14)


def test_freeze_groups_select_vision_tower_and_merger_by_parameter_path():
    params = {
        "visual": {"blocks": {0: {"attn": {"qkv": {"kernel": 0}}}}, "merger": {"mlp_0": {"kernel": 0}}},
        "model": {"layers": {0: {"mlp": {"up_proj": {"kernel": 0}}}}},
    }

    def frozen(**flags):
        patterns = opt_lib.freeze_patterns(ml_collections.ConfigDict({"freeze": "", **flags}))
        mask = opt_lib.trainable_mask(params, patterns)
        return (
            not mask["visual"]["blocks"][0]["attn"]["qkv"]["kernel"],
            not mask["visual"]["merger"]["mlp_0"]["kernel"],
            not mask["model"]["layers"][0]["mlp"]["up_proj"]["kernel"],
        )

    assert frozen() == (False, False, False)
    assert frozen(freeze_vision=True) == (True, False, False)
    assert frozen(freeze_merger=True) == (False, True, False)
    assert frozen(freeze_vision=True, freeze_merger=True) == (True, True, False)
