"""The attention entry point: mask descriptions, and splash (Pallas interpret mode on CPU) / Pallas GPU equal to the
xla reference in float32, forward and gradients, for every layout the models produce."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.attention import AttentionMask, BranchedSegments, attention, plan, set_implementation
from vinci_jax.models.dinov2 import Dinov2Config, Dinov2Model
from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
from vinci_jax.models.qwen2_5_vl.vision import Qwen25VisionTransformer
from vinci_jax.models.qwen3_vl import Qwen3VLConfig
from vinci_jax.models.qwen3_vl.vision import Qwen3VisionTransformer
from vinci_jax.models.qwen_vl.modeling import KVCache, chunk_attention
from vinci_jax.models.vision_inputs import prepare_vision_inputs

TOL = 1e-5


def _qkv(batch: int, length: int, heads: int, kv_heads: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = [(batch, length, heads, dim), (batch, length, kv_heads, dim), (batch, length, kv_heads, dim)]
    return tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)


def _close(a, b, tol: float = TOL) -> None:
    """Equal within `tol` relative to the larger magnitude (gradients of sums grow with the sequence length)."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=tol * scale, rtol=0)


def _check_pair(q, k, v, mask: AttentionMask, real: np.ndarray | None = None, implementation: str = "splash"):
    """`implementation` and xla agree on outputs at real positions and on dq, dk, dv of a loss over them."""
    weight = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    if real is not None:
        weight = weight * jnp.asarray(real, jnp.float32)[:, :, None, None]

    def loss(impl):
        return lambda q, k, v: jnp.sum(attention(q, k, v, mask, implementation=impl) * weight)

    def forward(impl):
        return jax.jit(lambda q, k, v: attention(q, k, v, mask, implementation=impl))

    out_x, out_s = forward("xla")(q, k, v), forward(implementation)(q, k, v)
    keep = np.ones(q.shape[:2], bool) if real is None else np.asarray(real, bool)
    _close(np.asarray(out_s)[keep], np.asarray(out_x)[keep])
    grads_x = jax.jit(jax.grad(loss("xla"), argnums=(0, 1, 2)))(q, k, v)
    grads_s = jax.jit(jax.grad(loss(implementation), argnums=(0, 1, 2)))(q, k, v)
    for gs, gx in zip(grads_s, grads_x, strict=True):
        _close(gs, gx)


# ---- descriptions ----------------------------------------------------------------------------------------------------


def test_token_mask_is_causal_within_segments_and_padding_is_its_own_segment():
    ids = np.asarray([[0, 0, 1, 1, 1, 2, 2, 0]], np.int32)
    dense = np.asarray(AttentionMask.for_tokens(segment_ids=ids, shape=ids.shape).dense(1, 8, 8))[0]
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    expected = (j <= i) & (ids[0][:, None] == ids[0][None, :])
    np.testing.assert_array_equal(dense, expected)
    assert dense.any(axis=1).all()  # no empty softmax row, padding included
    with pytest.raises(ValueError, match="not both"):
        AttentionMask.for_tokens(ids, ids, shape=ids.shape)


def test_cache_chunk_mask_sees_valid_slots_up_to_the_query_slot():
    """A 3-token chunk (last one padding) written at per-row offsets into a 6-slot cache with earlier holes."""
    cache = KVCache(k=(), v=(), valid=jnp.asarray([[1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]], bool),
                    next_index=jnp.asarray([2, 2], jnp.int32))  # fmt: skip
    _, _, valid, mask = chunk_attention(cache, jnp.asarray([[1, 1, 0], [1, 1, 0]]), 2, 3)
    dense = np.asarray(mask.dense(2, 3, 6))
    np.testing.assert_array_equal(np.asarray(valid), [[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(dense[0, 0], [1, 1, 1, 0, 0, 0])  # slot 2 sees 0..2
    np.testing.assert_array_equal(dense[1, 1], [0, 1, 1, 1, 0, 0])  # slot 3 sees the valid slots 1..3
    np.testing.assert_array_equal(dense[1, 2], [1, 0, 0, 0, 1, 0])  # the padding query: invalid slots <= 4
    assert plan("splash", 3, 6, mask) == "xla"  # per-row positions: no kernel expresses them


def test_auto_is_xla_on_cpu_and_splash_needs_no_positions():
    mask = AttentionMask.segments(jnp.ones((1, 256), jnp.int32), causal=True)
    assert plan("auto", 256, 256, mask) == "xla"
    assert plan("splash", 256, 256, mask) == "splash"
    assert plan("splash", 100, 100, mask) == "splash"  # padded to 128 inside
    assert plan("splash", 100, 256, mask) == "xla"  # causal with unequal unaligned lengths
    assert plan("cudnn", 256, 256, mask) == "pallas_gpu"
    assert plan("cudnn", 256, 256, AttentionMask(causal=True)) == "cudnn"
    assert plan("cudnn", 256, 256, AttentionMask(causal=True), jnp.float32) == "xla"  # cuDNN: 16-bit only
    with pytest.raises(ValueError, match="not one of"):
        plan("flash", 256, 256, mask)


def _shared_prefix_reference(segments: np.ndarray, slots: tuple[int, ...]) -> np.ndarray:
    """bool [B, L, L] by the definition: causal, equal segments, a response slot's keys only from that slot."""
    length = segments.shape[1]
    slot = np.searchsorted(np.cumsum(slots), np.arange(length), side="right")
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    branch_ok = (slot[j] == 0) | (slot[j] == slot[i])
    return (j <= i)[None] & branch_ok[None] & (segments[:, :, None] == segments[:, None, :])


def _shared_prefix_segments(batch: int, slots: tuple[int, ...], fills: list[list[int]]) -> np.ndarray:
    """Segment 1 on the first fills[b][s] tokens of slot s of row b (the prompt slot: its last tokens), 0 elsewhere."""
    ids = np.zeros((batch, sum(slots)), np.int32)
    starts = np.concatenate([[0], np.cumsum(slots)[:-1]])
    for b in range(batch):
        for s, (start, size, fill) in enumerate(zip(starts, slots, fills[b], strict=True)):
            if s == 0:
                ids[b, start + size - fill : start + size] = 1
            else:
                ids[b, start : start + fill] = 1
    return ids


def test_shared_prefix_mask_lets_each_response_see_the_prompt_and_itself_only():
    """Prompt slot 5 (3 real, left-padded), responses of slots 3, 3, 4 (2, 3, 0 real): the dense mask equals the
    definition, the slot layout reaches it through a model's `segment_ids`, and no softmax row is empty."""
    slots = (5, 3, 3, 4)
    ids = _shared_prefix_segments(1, slots, [[3, 2, 3, 0]])
    mask = AttentionMask.for_tokens(segment_ids=BranchedSegments(ids, slots), shape=ids.shape)
    dense = np.asarray(mask.dense(1, 15, 15))
    np.testing.assert_array_equal(dense, _shared_prefix_reference(ids, slots))
    assert dense[0, 5, 2:5].all() and not dense[0, 8, 5:8].any() and dense[0, 9, 8:10].all()
    assert dense.any(axis=2).all()
    assert plan("splash", 15, 15, mask) == "splash" and plan("cudnn", 128, 128, mask) == "xla"
    loose = dataclasses.replace(mask, branch_slots=None)  # branch ids without a static layout: only xla has them
    assert plan("splash", 15, 15, loose) == "xla"
    with pytest.raises(ValueError, match="causal self-attention"):
        AttentionMask(q_segment_ids=jnp.asarray(ids), branch_ids=mask.branch_ids)


def test_splash_shared_prefix_block_mask_equals_xla():
    """Two rows of one prompt slot of 96 then 3 response slots of 64 (padding inside slots as segment 0), 288
    tokens: padded to 384 for the 128 blocks; the computed block mask and the dense mask agree, forward and grads."""
    slots = (96, 64, 64, 64)
    ids = _shared_prefix_segments(2, slots, [[70, 64, 20, 1], [96, 5, 0, 40]])
    q, k, v = _qkv(2, 288, 2, 1, 16, seed=8)
    mask = AttentionMask.shared_prefix(ids, slots)
    _check_pair(q, k, v, mask, real=ids > 0)


# ---- splash == xla on the decoders' layouts ---------------------------------------------------------------------


def test_splash_packed_sft_rows_with_segment_ids():
    q, k, v = _qkv(2, 128, 4, 2, 16)
    ids = np.zeros((2, 128), np.int32)
    ids[0, :45], ids[0, 45:100], ids[0, 100:] = 1, 2, 0  # two samples then right padding
    ids[1, :40], ids[1, 40:] = 3, 4
    _check_pair(q, k, v, AttentionMask.for_tokens(segment_ids=ids, shape=ids.shape), real=ids > 0)


def test_splash_left_padded_prompts_and_grpo_response_windows():
    """GRPO rows: a left-padded prompt, then its response, then right padding up to the window bucket."""
    q, k, v = _qkv(3, 128, 4, 1, 16, seed=2)
    real = np.zeros((3, 128), np.int32)
    for row, (pad, prompt, response) in enumerate([(20, 44, 64), (0, 64, 30), (50, 14, 1)]):
        real[row, pad : pad + prompt + response] = 1
    _check_pair(q, k, v, AttentionMask.for_tokens(attention_mask=real, shape=real.shape), real=real > 0)


def test_splash_pads_lengths_that_are_not_a_block_multiple():
    """100 tokens padded to one 128 block: the pads are their own segment, causal rows stay unchanged."""
    q, k, v = _qkv(2, 100, 2, 2, 16, seed=3)
    ids = np.ones((2, 100), np.int32)
    ids[1, 70:] = 2
    _check_pair(q, k, v, AttentionMask.segments(ids, causal=True))


def test_splash_sliding_window_within_segments():
    q, k, v = _qkv(1, 128, 2, 1, 16, seed=6)
    ids = np.ones((1, 128), np.int32)
    ids[0, 90:] = 2
    _check_pair(q, k, v, AttentionMask.segments(ids, causal=True, window=24))


def test_splash_inside_shard_map_over_the_mesh_equals_xla():
    q, k, v = _qkv(4, 128, 4, 2, 16, seed=4)
    ids = np.ones((4, 128), np.int32)
    ids[:, 60:] = 2
    mask = AttentionMask.for_tokens(segment_ids=ids, shape=ids.shape)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})

    @jax.jit
    def both(q, k, v):
        return attention(q, k, v, mask, implementation="splash"), attention(q, k, v, mask, implementation="xla")

    with jax.set_mesh(mesh):
        out_s, out_x = both(q, k, v)
        text = both.lower(q, k, v).as_text()
    assert "shard_map" in text or "sdy.manual_computation" in text
    _close(out_s, out_x)


def test_pallas_gpu_kernel_with_segment_ids_equals_xla():
    """The cudnn implementation's segment-id path (Triton kernel, interpret mode here)."""
    q, k, v = _qkv(1, 128, 2, 1, 16, seed=5)
    ids = np.ones((1, 128), np.int32)
    ids[0, 50:] = 2
    mask = AttentionMask.for_tokens(segment_ids=ids, shape=ids.shape)
    _close(attention(q, k, v, mask, implementation="cudnn"), attention(q, k, v, mask, implementation="xla"))


def _forward_and_grads(model: nnx.Module, run, weight) -> tuple[jax.Array, dict]:
    graphdef, params = nnx.split(model)

    @jax.jit
    def both(p):
        out, vjp = jax.vjp(lambda p: run(nnx.merge(graphdef, p)), p)
        return out, vjp(weight)[0]

    out, grads = both(params)
    return out, dict(jax.tree_util.tree_flatten_with_path(grads)[0])


def _check_model(model: nnx.Module, run, real_of_output=None) -> None:
    """Forward and parameter gradients (of a random projection of the real outputs) of `run(model)` equal under
    splash and xla."""
    shape = jax.eval_shape(lambda: run(model)).shape
    weight = jnp.asarray(np.random.default_rng(7).normal(size=shape), jnp.float32)
    if real_of_output is not None:
        weight = weight * real_of_output
    outs, grads = {}, {}
    for impl in ("xla", "splash"):
        set_implementation(model, impl)
        outs[impl], grads[impl] = _forward_and_grads(model, run, weight)
    keep = np.ones(shape, bool) if real_of_output is None else np.broadcast_to(np.asarray(real_of_output) != 0, shape)
    _close(np.asarray(outs["splash"])[keep], np.asarray(outs["xla"])[keep])
    assert grads["xla"].keys() == grads["splash"].keys()
    for path, gx in grads["xla"].items():
        _close(grads["splash"][path], gx)


@pytest.mark.slow  # whole-model compiles in interpret mode (30-40 s here)
def test_qwen25_decoder_splash_equals_xla_on_grpo_rows():
    config = Qwen25VLConfig.tiny()
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=256, num_hidden_layers=1))
    model = Qwen25VLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    real = np.zeros((2, 128), np.int32)
    real[0, 30:100], real[1, 0:128] = 1, 1
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 200, size=(2, 128)), jnp.int32)
    positions = jnp.broadcast_to(jnp.cumsum(jnp.asarray(real), axis=1), (3, 2, 128))
    mask = jnp.asarray(real)

    def run(m):
        return m.hidden_states(ids, positions, attention_mask=mask)

    _check_model(model, run, jnp.asarray(real, jnp.float32)[:, :, None])


# ---- vision towers and DINOv2 ------------------------------------------------------------------------------------


def _pixels(grid: np.ndarray, patch_dim: int, seed: int = 0) -> np.ndarray:
    count = int(np.prod(grid, axis=1).sum())
    return np.random.default_rng(seed).normal(size=(count, patch_dim)).astype(np.float32)


@pytest.mark.slow  # a whole tower's gradient in interpret mode (25-50 s here)
def test_qwen25_vision_windowed_and_full_blocks_with_several_images():
    config = dataclasses.replace(Qwen25VLConfig.tiny().vision, depth=2, fullatt_block_indexes=(1,))
    model = Qwen25VisionTransformer(config, rngs=nnx.Rngs(1))
    grid = np.asarray([[1, 4, 6], [1, 8, 4], [1, 2, 2]])
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    inputs = prepare_vision_inputs(grid, _pixels(grid, patch_dim), config, row_patches=128)
    assert inputs.full_segment_ids.shape == (1, 128)  # window slots of 16 patches, grouped by 8 for splash
    assert len(set(np.unique(inputs.full_segment_ids)) - {0}) == 3  # one segment per image
    real = jnp.arange(inputs.reverse_index.shape[0])[:, None] < int(inputs.num_merged_tokens)
    _check_model(model, lambda m: m(inputs), real.astype(jnp.float32))


@pytest.mark.slow  # whole-model compiles in interpret mode (30-40 s here)
def test_qwen3_vision_splash_equals_xla():
    config = dataclasses.replace(Qwen3VLConfig.tiny().vision, depth=2, deepstack_visual_indexes=(0,))
    model = Qwen3VisionTransformer(config, rngs=nnx.Rngs(2))
    grid = np.asarray([[1, 4, 4], [1, 6, 4]])
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    inputs = prepare_vision_inputs(grid, _pixels(grid, patch_dim, 1), config, row_patches=128)
    real = jnp.arange(inputs.reverse_index.shape[0])[:, None] < int(inputs.num_merged_tokens)

    def run(m):
        features, deepstack = m(inputs)
        return jnp.concatenate([features, *deepstack], axis=-1)

    _check_model(model, run, real.astype(jnp.float32))


@pytest.mark.slow  # whole-model compiles in interpret mode (30-40 s here)
def test_dinov2_splash_equals_xla():
    """Unmasked attention over 1 + 16 tokens: splash pads them to a 128 block."""
    config = Dinov2Config.tiny()
    model = Dinov2Model(config, rngs=nnx.Rngs(3))
    side = config.patch_size * 4
    pixels = jnp.asarray(np.random.default_rng(4).normal(size=(2, side, side, 3)), jnp.float32)
    _check_model(model, lambda m: m(pixels)[1])


def test_vision_rows_are_sized_by_the_largest_image_not_the_batch():
    """Sampling / GRPO layout: 6 prompts' images -> rows of one image's bucket, one segment per image in a row."""
    from vinci_jax.models.vision_inputs import image_slot_patches, prepare_vision_rows, window_slot_patches

    config = Qwen25VLConfig.tiny().vision
    grid = np.asarray([[1, 8, 8], [1, 4, 4], [1, 8, 6], [1, 2, 2], [1, 8, 8], [1, 6, 4]])
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    inputs = prepare_vision_rows(grid, _pixels(grid, patch_dim), config)
    sizes = image_slot_patches(grid, config)
    rows, length = inputs.full_segment_ids.shape
    slot = window_slot_patches(config)
    assert length >= max(sizes) and length // 2 < max(sizes) and length % slot == 0
    assert length < sum(sizes) and rows > 1  # one row of all patches would be `sum(sizes)` long
    ids = np.asarray(inputs.full_segment_ids)
    frames = [(r, i) for r in range(rows) for i in np.unique(ids[r]) if i]
    assert len(frames) == len(grid) == len({i for _, i in frames})  # every image its own segment


def test_config_knob_reaches_every_attention_layer():
    """--config.model.attention=splash: the trainer's model (decoder, vision blocks) uses splash everywhere."""
    from configs import sft as sft_config
    from configs import virl as virl_config
    from vinci_jax.train.model import ModelFactory

    config = sft_config.get_config("tiny")
    config.model.family, config.model.attention = "qwen3_vl", "splash"  # Qwen3 layers reach the shared decoder layer
    factory = ModelFactory(config.model, sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]), seed=0)
    used = [m.implementation for _, m in nnx.iter_modules(factory.abstract) if hasattr(m, "implementation")]
    depth = factory.model_config.text.num_hidden_layers + factory.model_config.vision.depth
    assert used == ["splash"] * depth
    assert virl_config.get_config("qwen3_vl_8b").model.attention == "splash"
    assert sft_config.get_config("qwen2_5_vl_7b").model.attention == "splash"
    assert sft_config.get_config("tiny").model.attention == "auto"


def test_window_view_groups_whole_slots_of_one_row_for_splash():
    from vinci_jax.models.qwen2_5_vl.vision import window_view

    config = Qwen25VLConfig.tiny().vision  # window slots of 16 patches
    grid = np.asarray([[1, 4, 6], [1, 8, 4], [1, 2, 2], [1, 8, 8]])
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    inputs = prepare_vision_inputs(grid, _pixels(grid, patch_dim), config, row_patches=128)
    ids = jnp.asarray(inputs.window_segment_ids)
    assert window_view(ids, 128, "xla").shape == ids.shape == (inputs.full_segment_ids.size // 16, 16)
    grouped = np.asarray(window_view(ids, 128, "splash"))
    assert grouped.shape == (inputs.full_segment_ids.shape[0], 128)  # 8 slots a group, never across rows
    np.testing.assert_array_equal(grouped.reshape(-1), np.asarray(ids).reshape(-1))
    real = grouped[grouped > 0]
    assert len(np.unique(real)) == int(np.asarray(ids).max())  # window ids stay unique across the grouped slots


def test_fresh_prefill_attends_over_its_own_keys_like_the_cache_mask():
    """The sampler's prefill (`fresh=True`): same logits and cache as the [T, max_len] cache mask, and a description
    the kernels take (splash here) instead of per-row positions."""
    config = Qwen25VLConfig.tiny()
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=256, num_hidden_layers=1))
    model = Qwen25VLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    mask = np.zeros((2, 16), np.int32)
    mask[0, 5:], mask[1, :] = 1, 1  # left padding in row 0
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 200, size=(2, 16)), jnp.int32)
    positions = jnp.broadcast_to(jnp.cumsum(jnp.asarray(mask), axis=1), (3, 2, 16))
    cache = model.init_cache(2, 24)

    @functools.partial(nnx.jit, static_argnames="fresh")
    def prefill(model, fresh):
        return model.forward_with_cache(ids, positions, cache, jnp.asarray(mask), fresh=fresh)

    ref, ref_cache = prefill(model, False)
    out, out_cache = prefill(model, True)
    real = mask.astype(bool)
    _close(np.asarray(out)[real], np.asarray(ref)[real])
    for a, b in zip(jax.tree.leaves(out_cache), jax.tree.leaves(ref_cache), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[..., :1], np.asarray(b)[..., :1])  # written slots, valid, index
    _close(np.asarray(out_cache.k[0])[:, :16][real], np.asarray(ref_cache.k[0])[:, :16][real])
    prefill = AttentionMask.for_tokens(jnp.asarray(mask), shape=mask.shape)
    assert plan("splash", 16, 16, prefill) == "splash"
