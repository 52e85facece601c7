"""The NNX DINOv2 against transformers' PyTorch Dinov2Model / Dinov2WithRegistersModel in float32."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from vinci_jax.hf.dinov2 import DINOV2_RULES, load_dinov2
from vinci_jax.hf.loader import CheckpointMismatch, iter_hf_tensors
from vinci_jax.models.dinov2 import Dinov2Config, bicubic_matrix

SIZES = [(42, 70), (98, 84)]  # (H, W): both differ from the 4x4 position grid, one down, one up


def _save_registers(path, **overrides):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(1)
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=84, patch_size=14)
    kwargs.update(overrides)
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(path)
    return model


VARIANTS = {
    "plain": lambda save, p: save(p, layerscale_value=0.7),
    "swiglu": lambda save, p: save(p, use_swiglu_ffn=True, hidden_act="gelu"),
    "registers": lambda save, p: _save_registers(p, num_register_tokens=3),
    "registers_swiglu": lambda save, p: _save_registers(p, num_register_tokens=2, use_swiglu_ffn=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_features_match_transformers(variant, tmp_path, highest_precision, save_dinov2):
    torch_model = VARIANTS[variant](save_dinov2, tmp_path)
    model = load_dinov2(tmp_path)
    for height, width in SIZES:
        pixels = np.random.default_rng(height).standard_normal((2, 3, height, width)).astype(np.float32)
        with torch.no_grad():
            out = torch_model(torch.from_numpy(pixels), output_hidden_states=True)
        x = jnp.asarray(pixels.transpose(0, 2, 3, 1))
        pre, post = nnx.jit(lambda m, x: m(x))(model, x)
        np.testing.assert_allclose(np.asarray(pre), out.hidden_states[-1].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.asarray(post), out.last_hidden_state.numpy(), atol=1e-5, rtol=0)
        cls_pre, cls_post = nnx.jit(lambda m, x: (m.cls_features(x), m.cls_features(x, post_layernorm=True)))(model, x)
        np.testing.assert_allclose(np.asarray(cls_pre), out.hidden_states[-1][:, 0].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.asarray(cls_post), out.pooler_output.numpy(), atol=1e-5, rtol=0)
        assert not np.allclose(
            np.asarray(cls_pre), np.asarray(cls_post), atol=1e-3
        )  # the two feature choices really differ


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize(("n_in", "n_out"), [(37, 32), (4, 3), (4, 7), (5, 5)])
def test_bicubic_matrix_matches_torch_interpolate(n_in, n_out, antialias):
    grid = np.random.default_rng(0).standard_normal((1, 8, n_in, n_in)).astype(np.float32) * 0.1
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(grid), size=(n_out, n_out), mode="bicubic", align_corners=False, antialias=antialias
    ).numpy()
    m = bicubic_matrix(n_in, n_out, antialias).astype(np.float64)
    got = np.einsum("oi,bcij,pj->bcop", m, grid.astype(np.float64), m)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_config_round_trip_and_export_names(tiny_dinov2):
    path, torch_model = tiny_dinov2
    model = load_dinov2(path)
    config = model.config
    assert Dinov2Config.from_hf(config.to_hf()) == config
    exported = dict(iter_hf_tensors(model, DINOV2_RULES))
    from safetensors import safe_open

    with safe_open(f"{path}/model.safetensors", framework="np") as handle:
        assert set(exported) == set(handle.keys())
    np.testing.assert_array_equal(
        exported["encoder.layer.1.attention.attention.query.weight"],
        torch_model.encoder.layer[1].attention.q_proj.weight.detach().numpy(),
    )


def test_mismatched_checkpoint_names_every_problem(tmp_path, save_dinov2):
    save_dinov2(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    config["hidden_size"] = 36
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatch) as err:
        load_dinov2(tmp_path)
    assert "encoder.layer.2.norm1.scale" in str(err.value) and "wrong shape" in str(err.value)


def test_bfloat16_compute_is_close(tiny_dinov2):
    path, _ = tiny_dinov2
    pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, 56, 56, 3)).astype(np.float32))
    features = nnx.jit(lambda m, x: m.cls_features(x))
    full = np.asarray(features(load_dinov2(path), pixels))
    half = features(load_dinov2(path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16), pixels)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), full, atol=0.1 * np.abs(full).max())
