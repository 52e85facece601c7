"""The engine's decode copy of the policy: bf16 weights and compute, tensor-parallel layout (no fsdp split), the
training model left as it was, remade only when the weights change; float32 (the CPU default) is the model itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vinci_jax import sharding
from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl
from vinci_jax.sampling.decode_policy import decode_copy, resolve_decode_dtype
from vinci_jax.sampling.engine import Engine, EngineConfig


def test_auto_decode_dtype_is_bf16_on_accelerators_and_float32_on_cpu():
    assert resolve_decode_dtype("auto", "cpu") == jnp.float32
    assert resolve_decode_dtype("auto", "tpu") == jnp.bfloat16
    assert resolve_decode_dtype("auto", "gpu") == jnp.bfloat16
    assert resolve_decode_dtype("float32", "tpu") == jnp.float32
    with pytest.raises(ValueError, match="decode_dtype"):
        EngineConfig(decode_dtype="float16")


def test_bf16_decode_copy_is_tensor_parallel_and_leaves_the_training_model(tiny_qwen25_dir):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    with jax.set_mesh(mesh):
        sharding.shard_module(model, mesh)
        assert decode_copy(model, jnp.float32) is model
        copy = decode_copy(model, jnp.bfloat16)
    train = nnx.state(model, nnx.Param).to_pure_dict()
    decode = nnx.state(copy, nnx.Param).to_pure_dict()
    for path, value in jax.tree_util.tree_leaves_with_path(decode):
        assert value.dtype == jnp.bfloat16, path
    for value in jax.tree.leaves(train):
        assert value.dtype == jnp.float32
    q_train = train["model"]["layers"][0]["self_attn"]["q_proj"]["kernel"].sharding.spec
    q_decode = decode["model"]["layers"][0]["self_attn"]["q_proj"]["kernel"].sharding.spec
    assert "fsdp" in jax.tree.leaves(tuple(q_train)) and "fsdp" not in jax.tree.leaves(tuple(q_decode))
    assert "tensor" in jax.tree.leaves(tuple(q_decode))
    assert copy.dtype == jnp.bfloat16 and copy.model.layers[0].mlp.gate_proj.dtype == jnp.bfloat16


@pytest.mark.slow
def test_bf16_decode_copy_computes_the_same_model_in_bf16(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    copy = decode_copy(model, jnp.bfloat16)
    ids = jnp.asarray(np.arange(1, 13, dtype=np.int32)[None] % 900)
    positions = jnp.broadcast_to(jnp.arange(12)[None, None], (3, 1, 12))
    want, got = model(ids, positions), copy(ids, positions)
    assert got.dtype == jnp.bfloat16
    # bf16 rounding of weights and activations: close to float32's logits, never identical
    err = np.abs(np.asarray(got, np.float32) - np.asarray(want))
    assert 0 < err.max() < 0.1 * np.abs(np.asarray(want)).max() + 0.05


def test_engine_remakes_its_decode_copy_only_when_the_weights_change(tiny_qwen25_dir):
    model = load_qwen2_5_vl(tiny_qwen25_dir)
    engine = Engine(model, (1,), 0, EngineConfig(decode_dtype="bfloat16"))
    first = engine.decoder()
    assert engine.decoder() is first
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x * 2, params))
    second = engine.decoder()
    assert second is not first
    kernel = nnx.state(second, nnx.Param).to_pure_dict()["model"]["embed_tokens"]["embedding"]
    want = nnx.state(model, nnx.Param).to_pure_dict()["model"]["embed_tokens"]["embedding"]
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(want.astype(jnp.bfloat16)))
