"""Parity of the NNX Qwen2.5-VL vision tower with transformers' PyTorch tower, and static-shape bucketing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from vinci_jax import sharding
from vinci_jax.models.qwen2_5_vl.vision import Qwen25VisionTransformer, VisionConfig, prepare_vision_inputs

LAYOUTS = {
    # window_size 56 -> 2x2 merged units per window; 112 -> 4x4; full attention at two different layer sets
    "win56_full13": dict(window_size=56, fullatt_block_indexes=[1, 3], hidden_size=32, num_heads=2),
    "win112_full0": dict(window_size=112, fullatt_block_indexes=[0], hidden_size=64, num_heads=4),
}
COMMON = dict(depth=4, intermediate_size=48, out_hidden_size=40, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, in_channels=3)  # fmt: skip


def _vision_config(hf: Qwen2_5_VLVisionConfig) -> VisionConfig:
    return VisionConfig.from_hf(hf.to_dict())


def _copy_torch_weights(torch_model: torch.nn.Module, model: Qwen25VisionTransformer) -> None:
    """Torch state dict -> NNX params (test-local; the shared loader in vinci_jax.hf does this for checkpoints)."""
    for name, tensor in torch_model.state_dict().items():
        value = tensor.detach().numpy()
        path = name.replace("merger.mlp.0.", "merger.mlp_0.").replace("merger.mlp.2.", "merger.mlp_2.").split(".")
        if path[-1] == "weight":
            path[-1] = "kernel" if value.ndim >= 2 else "scale"
            value = np.moveaxis(value, 0, -1)  # torch [out, in...] -> NNX [in..., out]
        node = model
        for part in path[:-1]:
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        param = getattr(node, path[-1])
        assert param.value.shape == value.shape, name
        param.value = jnp.asarray(value)


def _randomize(torch_model: torch.nn.Module) -> None:
    """O(1) activations and non-trivial norms/biases, so a wrong window, rope or layout shows far above 1e-4."""
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.5 + (0.0 if name.endswith("bias") else 1.0))


def _build(layout: str, dtype=jnp.float32):
    """A random torch tower and the NNX tower holding the same weights."""
    torch.manual_seed(0)
    hf_config = Qwen2_5_VLVisionConfig(**COMMON, **LAYOUTS[layout])
    torch_model = Qwen2_5_VisionTransformerPretrainedModel(hf_config).eval()
    _randomize(torch_model)
    config = _vision_config(hf_config)
    model = Qwen25VisionTransformer(config, rngs=nnx.Rngs(0), dtype=dtype)
    _copy_torch_weights(torch_model, model)
    return torch_model, config, model


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def towers(request):
    torch_model, config, model = _build(request.param)
    graphdef, state = nnx.split(model)
    traces = {"count": 0}

    @jax.jit
    def forward(state, inputs):
        traces["count"] += 1
        return nnx.merge(graphdef, state)(inputs)

    return torch_model, config, lambda inputs: forward(state, inputs), traces


def _images(grids, config, seed=0):
    grid = np.asarray(grids, dtype=np.int64)
    dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixels = np.random.default_rng(seed).standard_normal((int(np.prod(grid, axis=1).sum()), dim)).astype(np.float32)
    return grid, pixels


def _torch_features(torch_model, grid, pixels):
    with torch.no_grad():
        out = torch_model(torch.from_numpy(pixels), grid_thw=torch.from_numpy(grid))
    return out.pooler_output.numpy()


@pytest.mark.parametrize(
    "grids,bucket",
    [
        ([[1, 10, 14]], None),  # odd merged grid (5x7): partial windows at the borders
        ([[1, 10, 14], [1, 6, 4]], None),  # two images of different sizes together
        ([[1, 6, 8], [2, 4, 4]], [1024]),  # much larger bucket than needed; a two-frame entry
    ],
)
def test_merged_features_match_transformers(towers, grids, bucket):
    torch_model, config, forward, _ = towers
    grid, pixels = _images(grids, config)
    inputs = prepare_vision_inputs(grid, pixels, config, bucket_sizes=bucket)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(forward(inputs))
    expected = _torch_features(torch_model, grid, pixels)
    n = int(inputs.num_merged_tokens)
    assert n == expected.shape[0]
    assert ours.shape == (inputs.bucket_size // 4, config.out_hidden_size)
    np.testing.assert_allclose(ours[:n], expected, atol=1e-4, rtol=0)


def test_same_bucket_does_not_retrace(towers):
    torch_model, config, forward, traces = towers
    with jax.default_matmul_precision("highest"):
        grid_a, pixels_a = _images([[1, 8, 12]], config, seed=1)  # 96 patches -> bucket 128
        grid_b, pixels_b = _images([[1, 6, 6], [1, 4, 8]], config, seed=2)  # 68 patches -> bucket 128
        inputs_a = prepare_vision_inputs(grid_a, pixels_a, config)
        inputs_b = prepare_vision_inputs(grid_b, pixels_b, config)
        assert inputs_a.bucket_size == inputs_b.bucket_size == 128
        forward(inputs_a)
        before = traces["count"]
        out_b = np.asarray(forward(inputs_b))
        assert traces["count"] == before  # new sizes, same bucket: no new trace
    np.testing.assert_allclose(out_b[: int(inputs_b.num_merged_tokens)], _torch_features(torch_model, grid_b, pixels_b),
                               atol=1e-4, rtol=0)  # fmt: skip


def test_rows_pack_many_images_and_match_transformers(towers):
    torch_model, config, forward, _ = towers
    grid, pixels = _images([[1, 6, 8], [1, 4, 4], [1, 8, 6], [2, 4, 4]], config, seed=5)
    inputs = prepare_vision_inputs(grid, pixels, config, row_patches=128)
    rows = inputs.full_segment_ids.shape[0]
    assert inputs.full_segment_ids.shape[1] == 128 and rows in (2, 4)  # 2 rows for 16-patch windows, 3 -> 4 for 64
    # whole images per row: no frame id appears in two rows
    frame_rows = [set(np.nonzero((inputs.full_segment_ids == f).any(axis=1))[0]) for f in range(1, 6)]
    assert all(len(r) == 1 for r in frame_rows)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(forward(inputs))[: int(inputs.num_merged_tokens)]
    np.testing.assert_allclose(ours, _torch_features(torch_model, grid, pixels), atol=1e-4, rtol=0)


def test_layout_isolates_padding_and_windows():
    config = VisionConfig(**COMMON, window_size=56, fullatt_block_indexes=(1, 3), hidden_size=32, num_heads=2)
    grid, pixels = _images([[1, 6, 10], [1, 4, 4]], config)  # 3x5 merged (6 windows of 2x2) + 2x2 (1 window)
    inputs = prepare_vision_inputs(grid, pixels, config, bucket_sizes=[64, 256])
    assert inputs.bucket_size == 256 and int(inputs.num_merged_tokens) == (60 + 16) // 4
    full = inputs.full_segment_ids.reshape(-1)
    window = inputs.window_segment_ids.reshape(-1)
    assert inputs.window_segment_ids.shape == (256 // 16, 16)
    assert (full > 0).sum() == 76 and np.array_equal(full > 0, window > 0)
    assert not inputs.pixel_values.reshape(256, -1)[full == 0].any()
    assert sorted(np.unique(full[full > 0]).tolist()) == [1, 2]
    for slot in inputs.window_segment_ids:  # one window per slot, never spanning two images
        assert len(np.unique(slot[slot > 0])) <= 1
        assert len(np.unique(full[np.isin(window, slot[slot > 0])])) <= 1
    assert sorted(inputs.reverse_index.tolist()) == list(range(256 // 4))
    with pytest.raises(ValueError, match="largest bucket 64"):
        prepare_vision_inputs(grid, pixels, config, bucket_sizes=[64])
    with pytest.raises(ValueError, match="pixel_values has shape"):
        prepare_vision_inputs(grid, pixels[:-1], config)
    with pytest.raises(ValueError, match="raise row_patches"):
        prepare_vision_inputs(grid, pixels, config, row_patches=64)


def test_sharded_forward_equals_single_device():
    _, config, model = _build("win56_full13")
    grid, pixels = _images([[1, 10, 14], [1, 4, 6]], config, seed=3)
    inputs = prepare_vision_inputs(grid, pixels, config)
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(nnx.jit(lambda m, x: m(x))(model, inputs))
        mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
        with jax.set_mesh(mesh):
            sharding.shard_module(model, mesh)
            assert not model.blocks[0].mlp.gate_proj.kernel.value.sharding.is_fully_replicated
            got = np.asarray(nnx.jit(lambda m, x: m(x))(model, inputs))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_bfloat16_compute_tracks_float32():
    torch_model, config, model = _build("win112_full0", dtype=jnp.bfloat16)
    grid, pixels = _images([[1, 10, 14]], config, seed=4)
    inputs = prepare_vision_inputs(grid, pixels, config)
    out = nnx.jit(lambda m, x: m(x))(model, inputs)
    assert out.dtype == jnp.bfloat16 and model.blocks[0].attn.qkv.kernel.value.dtype == jnp.float32
    expected = _torch_features(torch_model, grid, pixels)
    got = np.asarray(out[: int(inputs.num_merged_tokens)], dtype=np.float32)
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
