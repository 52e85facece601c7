"""Qwen2.5-VL (text side + full model) against transformers' PyTorch model on tiny random checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import Qwen2_5_VLForConditionalGeneration

from vinci_jax import sharding
from vinci_jax.hf.check import Batch, compare, jax_logits, random_batch, torch_logits
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.hf.testing import save_tiny_checkpoint
from vinci_jax.models.qwen2_5_vl.rope_index import get_rope_index, text_position_ids
from vinci_jax.models.qwen2_5_vl.vision import prepare_vision_inputs

# Two checkpoints cover: untied/tied lm_head, GQA ratios 2 and 4, two window/full layouts (window 2 merged units
# with the last of 2 blocks full; window 3 units with blocks 0 and 2 of 3 full), left and right padding, odd grids.
CASES = {
    "untied_gqa2": dict(
        hf=dict(
            tie_word_embeddings=False, num_key_value_heads=2, vision_depth=2, fullatt_block_indexes=(1,), window_size=56
        ),
        batch=dict(grids=((1, 6, 10), (1, 8, 4), (1, 4, 6)), rows=((5, 0, 3, 1, 4), (3, 2, 6)), left_pad=True),
    ),
    "tied_gqa4": dict(
        hf=dict(
            tie_word_embeddings=True,
            num_key_value_heads=1,
            vision_depth=3,
            fullatt_block_indexes=(0, 2),
            window_size=84,
        ),
        batch=dict(grids=((1, 2, 2), (1, 10, 6), (1, 6, 14)), rows=((4, 0, 2, 1, 3), (2, 2, 5)), left_pad=False),
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    spec = CASES[request.param]
    path = save_tiny_checkpoint(tmp_path_factory.mktemp(request.param), seed=len(request.param), **spec["hf"])
    hf_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    model = load_qwen2_5_vl(path, dtype=jnp.float32)
    batch = random_batch(model.config, seed=1, **spec["batch"])
    return request.param, hf_model, model, batch


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def test_logits_match_transformers(case):
    name, hf_model, model, batch = case
    assert (model.lm_head is None) == name.startswith("tied")
    ref = torch_logits(hf_model, batch, model.config.image_token_id)
    ours = jax_logits(model, batch)
    result = compare(ref, ours, batch.attention_mask)
    assert result["max_abs_diff"] < 1e-4, result
    assert result["top1_agreement"] == 1.0


def test_logits_match_transformers_with_the_layer_scan(case):
    """scan_layers (decoder layers and the windowed + full vision blocks as scan bodies) keeps HF parity."""
    from vinci_jax.models.layers import set_scan_layers

    name, hf_model, model, batch = case
    if name != "tied_gqa4":
        pytest.skip("one checkpoint keeps the default-suite budget (blocks 0 and 2 of 3 full, window 3 units)")
    ref = torch_logits(hf_model, batch, model.config.image_token_id)
    try:
        ours = jax_logits(set_scan_layers(model, True), batch)
    finally:
        set_scan_layers(model, False)
    result = compare(ref, ours, batch.attention_mask)
    assert result["max_abs_diff"] < 1e-4, result
    assert result["top1_agreement"] == 1.0


def test_position_ids_match_transformers(case):
    _, hf_model, model, batch = case
    cfg = model.config
    ref, ref_delta = hf_model.model.get_rope_index(
        torch.from_numpy(batch.input_ids),
        torch.from_numpy((batch.input_ids == cfg.image_token_id).astype(np.int64)),
        torch.from_numpy(batch.image_grid_thw),
        attention_mask=torch.from_numpy(batch.attention_mask),
    )
    ours, delta = get_rope_index(
        batch.input_ids, batch.image_grid_thw, batch.attention_mask, image_token_id=cfg.image_token_id
    )
    np.testing.assert_array_equal(ours, ref.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def _extend(batch: Batch, extra: np.ndarray) -> Batch:
    """Append `extra` [B, n] text tokens right after each row's last real token (rows realigned as needed)."""
    pairs = zip(batch.input_ids, batch.attention_mask, extra, strict=True)
    rows = [np.concatenate([ids[m == 1], e]) for ids, m, e in pairs]
    left = batch.attention_mask[:, 0].min() == 0
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for b, r in enumerate(rows):
        cols = slice(length - len(r), length) if left else slice(0, len(r))
        ids[b, cols], mask[b, cols] = r, 1
    return Batch(ids, mask, batch.pixel_values, batch.image_grid_thw)


def test_kv_cache_prefill_then_decode_matches_full_forward(case):
    _, _, model, batch = case
    cfg = model.config
    steps = 3
    extra = np.random.default_rng(0).integers(0, 300, (2, steps))
    full = _extend(batch, extra)
    full_logits = jax_logits(model, full)

    pos, delta = get_rope_index(
        batch.input_ids, batch.image_grid_thw, batch.attention_mask, image_token_id=cfg.image_token_id
    )
    vis = jax.tree.map(jnp.asarray, prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, cfg.vision))
    step = nnx.jit(lambda m, ids, p, c, mask, v: m.forward_with_cache(ids, p, c, attention_mask=mask, vision_inputs=v))
    cache = model.init_cache(2, batch.input_ids.shape[1] + steps + 2)
    logits, cache = step(
        model, jnp.asarray(batch.input_ids), jnp.asarray(pos), cache, jnp.asarray(batch.attention_mask), vis
    )
    real_len = batch.attention_mask.sum(1)
    np.testing.assert_array_equal(
        np.asarray(cache.next_index), np.where(batch.attention_mask[:, 0] == 0, batch.input_ids.shape[1], real_len)
    )

    full_real = [np.flatnonzero(m) for m in full.attention_mask]
    for b in range(2):  # prefill logits equal the full forward's on the prompt tokens
        prompt_cols = np.flatnonzero(batch.attention_mask[b])
        np.testing.assert_allclose(
            np.asarray(logits)[b, prompt_cols], full_logits[b, full_real[b][: len(prompt_cols)]], atol=1e-4
        )
    next_pos = real_len + delta[:, 0]
    for t in range(steps):
        ids = jnp.asarray(extra[:, t : t + 1])
        logits, cache = step(model, ids, jnp.asarray(text_position_ids(next_pos + t, 1)), cache, None, None)
        for b in range(2):
            want = full_logits[b, full_real[b][real_len[b] + t]]
            np.testing.assert_allclose(np.asarray(logits)[b, 0], want, atol=1e-4)


def test_packed_segments_equal_separate_rows(case):
    """Two samples packed in one row (segment ids, per-sample positions) give each sample's own logits."""
    name, _, model, batch = case
    if name != "untied_gqa2":
        pytest.skip("one layout is enough for packing (masks do not depend on the checkpoint)")
    cfg = model.config
    rows = [ids[m == 1] for ids, m in zip(batch.input_ids, batch.attention_mask, strict=True)]
    packed = np.concatenate(rows + [np.zeros(3, np.int64)])[None]
    segments = np.concatenate([np.full(len(r), k + 1) for k, r in enumerate(rows)] + [np.zeros(3, int)])[None]
    pos, _ = get_rope_index(packed, batch.image_grid_thw, image_token_id=cfg.image_token_id, segment_ids=segments)
    vis = prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, cfg.vision)
    forward = nnx.jit(lambda m, ids, p, seg, v: m(ids, p, segment_ids=seg, vision_inputs=v))
    args = jnp.asarray(packed), jnp.asarray(pos), jnp.asarray(segments), jax.tree.map(jnp.asarray, vis)
    packed_logits = np.asarray(forward(model, *args))
    separate = jax_logits(model, batch)
    offset = 0
    for b, r in enumerate(rows):
        want = separate[b, np.flatnonzero(batch.attention_mask[b])]
        np.testing.assert_allclose(packed_logits[0, offset : offset + len(r)], want, atol=1e-4)
        offset += len(r)


def test_sharded_forward_equals_single_device(case):
    name, _, model, batch = case
    if name != "untied_gqa2":
        pytest.skip("one layout is enough for the sharding check")
    single = jax_logits(model, batch)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded_model = sharded_copy(model, mesh)
    kernel = sharded_model.model.layers[0].mlp.up_proj.kernel.get_value()
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    with jax.set_mesh(mesh):
        sharded = jax_logits(sharded_model, batch)
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def sharded_copy(model, mesh):
    """A copy of `model` with every parameter placed on its logical sharding over `mesh`."""
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
    return sharding.shard_module(copy, mesh)


@pytest.mark.slow  # two gradient compiles (~15 s of CPU)
def test_remat_gives_the_same_gradients(case):
    name, _, model, _ = case
    if name != "untied_gqa2":
        pytest.skip("one checkpoint is enough for remat")
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, state)  # a copy whose remat flag we may flip
    ids = jnp.arange(16).reshape(2, 8) + 3
    positions = jnp.broadcast_to(jnp.arange(8), (3, 2, 8))

    def loss(m):
        return jnp.mean(m(ids, positions, attention_mask=jnp.ones_like(ids)) ** 2)

    plain = nnx.jit(nnx.grad(loss))(model)
    model.model.remat_policy = "dots_no_batch"
    rematted = nnx.jit(nnx.grad(loss))(model)
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), plain, rematted)
    assert max(jax.tree.leaves(diffs)) < 1e-6
    assert float(jnp.max(jnp.abs(plain["model"]["layers"][0]["mlp"]["up_proj"]["kernel"][...]))) > 0


def test_bfloat16_error_is_no_worse_than_transformers_own(case):
    """In bfloat16 our logits stay as close to the float32 reference as transformers' bfloat16 run does."""
    name, hf_model, model, batch = case
    if name != "untied_gqa2":
        pytest.skip("one checkpoint is enough for the bfloat16 check")
    cfg = model.config
    ref = torch_logits(hf_model, batch, cfg.image_token_id)
    hf16 = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_model.name_or_path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        hf_bf16 = (
            hf16(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
                pixel_values=torch.from_numpy(batch.pixel_values).bfloat16(),
                image_grid_thw=torch.from_numpy(batch.image_grid_thw),
                mm_token_type_ids=torch.from_numpy((batch.input_ids == cfg.image_token_id).astype(np.int64)),
            )
            .logits.float()
            .numpy()
        )
    ours_bf16 = jax_logits(load_qwen2_5_vl(hf_model.name_or_path, dtype=jnp.bfloat16), batch)
    theirs = compare(ref, hf_bf16, batch.attention_mask)["max_abs_diff"]
    ours = compare(ref, ours_bf16, batch.attention_mask)["max_abs_diff"]
    assert 0 < ours <= 2 * theirs, (ours, theirs)
