"""Qwen3-VL in JAX against transformers' Qwen3VLForConditionalGeneration on tiny random checkpoints (float32).

Checkpoints are written by transformers (`save_pretrained`) and read through the real loader. Layouts vary tying,
DeepStack index sets (several levels, one, none) and GQA; logits, vision features and DeepStack features are
compared separately, then the KV cache, packing, sharding, the HF round trip and greedy generation.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file

from vinci_jax import sharding
from vinci_jax.hf.check import Batch, jax_logits, random_batch, torch_logits
from vinci_jax.hf.loader import hf_tensor_files
from vinci_jax.hf.qwen3_vl import export_qwen3_vl, load_qwen3_vl, read_config
from vinci_jax.models.qwen3_vl.modeling import mrope_axis_of_slot
from vinci_jax.models.qwen3_vl.rope_index import get_rope_index, text_position_ids
from vinci_jax.models.qwen3_vl.testing import save_tiny_checkpoint
from vinci_jax.models.vision_inputs import prepare_vision_inputs

LAYOUTS = {
    "untied_deepstack_0_2": dict(tie_word_embeddings=False, deepstack_visual_indexes=(0, 2)),
    "tied_deepstack_1_mha": dict(tie_word_embeddings=True, deepstack_visual_indexes=(1,), num_key_value_heads=4),
    "untied_deepstack_2_1_0_pos36": dict(deepstack_visual_indexes=(2, 1, 0), num_position_embeddings=36),
    "no_deepstack": dict(deepstack_visual_indexes=()),
}
SLOW_LAYOUTS = ("untied_deepstack_2_1_0_pos36", "no_deepstack")  # default runs keep the 3-minute budget
SHARED = dict(initializer_range=0.1)  # peaked logits: differences are measured against a real signal


@pytest.fixture(scope="module", autouse=True)
def highest_precision():
    jax.config.update("jax_default_matmul_precision", "highest")
    yield
    jax.config.update("jax_default_matmul_precision", None)


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=pytest.mark.slow) if n in SLOW_LAYOUTS else n for n in sorted(LAYOUTS)],
)
def case(request, tmp_path_factory):
    from transformers import Qwen3VLForConditionalGeneration

    path = save_tiny_checkpoint(tmp_path_factory.mktemp(request.param), **LAYOUTS[request.param], **SHARED)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    model = load_qwen3_vl(path)
    return request.param, path, hf, model, random_batch(model.config, seed=1)


def test_logits_match_transformers(case):
    _, _, hf, model, batch = case
    ref = torch_logits(hf, batch, model.config.image_token_id)
    ours = jax_logits(model, batch)
    real = batch.attention_mask.astype(bool)
    assert ref[real].std() > 0.5  # a meaningful signal, not near-zero logits
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_logits_match_transformers_with_the_layer_scan(case):
    """scan_layers (DeepStack extraction in the tower's scan, injection in the decoder's) keeps HF parity."""
    from vinci_jax.models.layers import set_scan_layers

    name, _, hf, model, batch = case
    if name != "untied_deepstack_0_2":
        pytest.skip("one checkpoint keeps the default-suite budget")
    ref = torch_logits(hf, batch, model.config.image_token_id)
    try:
        ours = jax_logits(set_scan_layers(model, True), batch)
    finally:
        set_scan_layers(model, False)
    real = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_vision_and_deepstack_features_match_transformers(case):
    name, _, hf, model, batch = case
    with torch.no_grad():
        out = hf.model.visual(torch.from_numpy(batch.pixel_values), grid_thw=torch.from_numpy(batch.image_grid_thw))
    inputs = jax.tree.map(
        jnp.asarray, prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, model.config.vision)
    )
    features, deepstack = nnx.jit(lambda m, v: m.visual(v))(model, inputs)
    n = int(inputs.num_merged_tokens)
    np.testing.assert_allclose(np.asarray(features)[:n], out.pooler_output.numpy(), atol=1e-5)
    assert len(deepstack) == len(out.deepstack_features) == len(LAYOUTS[name]["deepstack_visual_indexes"])
    for ours, ref in zip(deepstack, out.deepstack_features, strict=True):
        assert ref.abs().max() > 0.1
        np.testing.assert_allclose(np.asarray(ours)[:n], ref.numpy(), atol=1e-5)


def test_interleaved_mrope_slots_match_transformers(case):
    """Slot -> axis table of our rotary embedding equals HF's recomposition (probed with one-hot positions)."""
    _, _, hf, model, _ = case
    rotary = hf.model.language_model.rotary_emb
    half = model.config.text.head_dim // 2
    axes = []
    for axis in range(3):
        position_ids = torch.zeros(3, 1, 1, dtype=torch.long)
        position_ids[axis] = 1
        _, sin = rotary(torch.zeros(1, dtype=torch.float32), position_ids)
        axes.append((sin[0, 0, :half].abs() > 0).numpy())
    expected = np.argmax(np.stack(axes), axis=0)
    assert np.stack(axes).sum(0).tolist() == [1] * half  # every slot reads exactly one axis
    np.testing.assert_array_equal(mrope_axis_of_slot(model.config.text), expected)
    assert set(expected.tolist()) == {0, 1, 2}


def test_rope_index_matches_transformers_with_video_frames(case):
    name, _, hf, model, _ = case
    if name != "untied_deepstack_0_2":
        pytest.skip("positions do not depend on the checkpoint")
    cfg = model.config
    image, video, vs, ve = cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id
    # text, image (4x6 patches), text, video of 2 frames (4x4) separated by "timestamp" text, text; and a padded row
    row0 = [5, 6, vs] + [image] * 6 + [ve, 7] + [8, vs] + [video] * 4 + [ve] + [9, 9, vs] + [video] * 4 + [ve, 4]
    row1 = [0] * 5 + [3, vs] + [image] * 4 + [ve, 2, 2]
    row1 += [0] * (len(row0) - len(row1))
    ids = np.asarray([row0, row1[: len(row0)]], np.int64)
    mask = np.ones_like(ids)
    mask[1, :5] = 0
    mask[1, 5 + 9 :] = 0
    images = np.asarray([[1, 4, 6], [1, 4, 4]], np.int64)
    videos = np.asarray([[2, 4, 4]], np.int64)
    ours, deltas = get_rope_index(ids, images, mask, image_token_id=image, video_token_id=video, video_grid_thw=videos)
    types = np.where(ids == image, 1, np.where(ids == video, 2, 0))
    ref, ref_deltas = hf.model.get_rope_index(
        torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(images), torch.from_numpy(videos),
        torch.from_numpy(mask),
    )  # fmt: skip
    real = mask.astype(bool)
    np.testing.assert_array_equal(ours[:, real], ref.numpy()[:, real])
    np.testing.assert_array_equal(deltas, ref_deltas.numpy())


def test_kv_cache_prefill_then_decode_matches_full_forward(case):
    name, _, _, model, batch = case
    if name not in ("untied_deepstack_0_2", "untied_deepstack_2_1_0_pos36"):
        pytest.skip("one layout per run is enough for the cache")
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
    full_real = [np.flatnonzero(m) for m in full.attention_mask]
    real_len = batch.attention_mask.sum(1)
    for b in range(2):
        cols = np.flatnonzero(batch.attention_mask[b])
        np.testing.assert_allclose(np.asarray(logits)[b, cols], full_logits[b, full_real[b][: len(cols)]], atol=1e-4)
    next_pos = real_len + delta[:, 0]
    for t in range(steps):
        ids = jnp.asarray(extra[:, t : t + 1])
        logits, cache = step(model, ids, jnp.asarray(text_position_ids(next_pos + t, 1)), cache, None, None)
        for b in range(2):
            np.testing.assert_allclose(
                np.asarray(logits)[b, 0], full_logits[b, full_real[b][real_len[b] + t]], atol=1e-4
            )


def _extend(batch: Batch, extra: np.ndarray) -> Batch:
    """The batch with `extra` tokens appended after each row's last real token (rows stay left-padded)."""
    rows = [
        np.concatenate([ids[m == 1], e]) for ids, m, e in zip(batch.input_ids, batch.attention_mask, extra, strict=True)
    ]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, length - len(r) :], mask[b, length - len(r) :] = r, 1
    return Batch(ids, mask, batch.pixel_values, batch.image_grid_thw)


def test_packed_segments_equal_separate_rows(case):
    """Two samples packed in one row (segment ids, per-sample positions): DeepStack features land on each sample's
    own image tokens and attention never crosses samples."""
    name, _, _, model, batch = case
    if name != "untied_deepstack_0_2":
        pytest.skip("one layout is enough for packing")
    cfg = model.config
    rows = [ids[m == 1] for ids, m in zip(batch.input_ids, batch.attention_mask, strict=True)]
    packed = np.concatenate(rows + [np.zeros(3, np.int64)])[None]
    segments = np.concatenate([np.full(len(r), k + 1) for k, r in enumerate(rows)] + [np.zeros(3, int)])[None]
    pos, _ = get_rope_index(packed, batch.image_grid_thw, image_token_id=cfg.image_token_id, segment_ids=segments)
    vis = prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, cfg.vision, row_patches=256)
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
    name, path, _, model, batch = case
    if name != "untied_deepstack_0_2":
        pytest.skip("one layout is enough for the sharding check")
    single = jax_logits(model, batch)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded_model = load_qwen3_vl(path, mesh=mesh)
    kernel = sharded_model.model.layers[0].mlp.up_proj.kernel.get_value()
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    with jax.set_mesh(mesh):
        sharded = jax_logits(sharded_model, batch)
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def test_hf_round_trip_is_exact(case, tmp_path):
    name, path, _, model, _ = case
    if name not in ("untied_deepstack_0_2", "tied_deepstack_1_mha"):
        pytest.skip("tied and untied are enough for the round trip")
    out = export_qwen3_vl(model, tmp_path / "export", dtype="float32", source_dir=path, max_shard_bytes=200_000)
    original = {k: v for f in sorted(set(hf_tensor_files(path).values())) for k, v in load_file(f).items()}
    written = {k: v for f in sorted(set(hf_tensor_files(out).values())) for k, v in load_file(f).items()}
    if model.config.tie_word_embeddings:
        original.pop("lm_head.weight", None)
    assert sorted(written) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    assert len(list(out.glob("model-*.safetensors"))) > 1  # sharded export
    assert read_config(out) == model.config
    exported = json.loads((out / "config.json").read_text())
    saved = json.loads((path / "config.json").read_text())
    for key in ("model_type", "image_token_id", "tie_word_embeddings"):
        assert exported[key] == saved[key]
    for sub in ("text_config", "vision_config"):
        assert {k: v for k, v in exported[sub].items() if k != "dtype"} == {
            k: v for k, v in saved[sub].items() if k in exported[sub]
        }


@pytest.mark.slow
def test_remat_gives_the_same_gradients(case):
    name, _, _, model, batch = case
    if name != "untied_deepstack_0_2":
        pytest.skip("one checkpoint is enough for remat")
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, state)  # a copy whose remat policy we may flip
    cfg = model.config
    pos, _ = get_rope_index(
        batch.input_ids, batch.image_grid_thw, batch.attention_mask, image_token_id=cfg.image_token_id
    )
    vis = jax.tree.map(jnp.asarray, prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, cfg.vision))
    args = jnp.asarray(batch.input_ids), jnp.asarray(pos), jnp.asarray(batch.attention_mask)

    def loss(m):
        return jnp.mean(m(*args, vision_inputs=vis) ** 2)

    plain = nnx.jit(nnx.grad(loss))(model)
    model.model.remat_policy = "full"
    rematted = nnx.jit(nnx.grad(loss))(model)
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), plain, rematted)
    assert max(jax.tree.leaves(diffs)) < 1e-6
    # gradients reach the DeepStack mergers through the decoder
    assert float(jnp.max(jnp.abs(plain["visual"]["deepstack_merger_list"][0]["linear_fc1"]["kernel"][...]))) > 0


@pytest.mark.slow
def test_bfloat16_error_is_no_worse_than_transformers_own(case):
    """In bfloat16 our logits stay as close to the float32 reference as transformers' bfloat16 run does."""
    from transformers import Qwen3VLForConditionalGeneration

    name, path, hf, model, batch = case
    if name != "untied_deepstack_0_2":
        pytest.skip("one checkpoint is enough for the bfloat16 check")
    cfg = model.config
    ref = torch_logits(hf, batch, cfg.image_token_id)
    hf16 = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        hf_bf16 = hf16(
            input_ids=torch.from_numpy(batch.input_ids),
            attention_mask=torch.from_numpy(batch.attention_mask),
            pixel_values=torch.from_numpy(batch.pixel_values).bfloat16(),
            image_grid_thw=torch.from_numpy(batch.image_grid_thw),
            mm_token_type_ids=torch.from_numpy((batch.input_ids == cfg.image_token_id).astype(np.int64)),
        ).logits.float().numpy()  # fmt: skip
    ours_bf16 = jax_logits(load_qwen3_vl(path, dtype=jnp.bfloat16), batch)
    real = batch.attention_mask.astype(bool)
    theirs = np.abs(hf_bf16 - ref)[real].max()
    ours = np.abs(ours_bf16 - ref)[real].max()
    assert 0 < ours <= 2 * theirs, (ours, theirs)


@pytest.mark.slow
def test_released_head_and_position_shapes_match_transformers(tmp_path):
    """head_dim 128 with the released mrope_section (24, 20, 20), the 48x48 position table resampled to large
    grids, three DeepStack levels."""
    from transformers import Qwen3VLConfig as HFConfig
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    config = HFConfig(
        text_config=dict(
            hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=128, vocab_size=1000, bos_token_id=900, eos_token_id=901, initializer_range=0.05,
            rope_parameters=dict(
                rope_type="default", rope_theta=5e6, mrope_section=[24, 20, 20], mrope_interleaved=True
            ),
        ),
        vision_config=dict(
            depth=4, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=256,
            num_position_embeddings=2304, deepstack_visual_indexes=[0, 1, 3], initializer_range=0.05,
        ),
        image_token_id=950, video_token_id=951, vision_start_token_id=952, vision_end_token_id=953,
    )  # fmt: skip
    hf = Qwen3VLForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    model = load_qwen3_vl(tmp_path)
    batch = random_batch(
        model.config, 0, grids=((1, 28, 40), (1, 64, 16), (1, 8, 6)), rows=((30, 0, 20, 1, 4), (3, 2, 6))
    )
    ref = torch_logits(hf, batch, model.config.image_token_id)
    ours = jax_logits(model, batch)
    real = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)
