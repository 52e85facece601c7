"""The shared safetensors loader on a tiny NNX module: rules both ways, shards, errors, sharding, dtype."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from vinci_jax import sharding
from vinci_jax.hf.loader import (
    CONV,
    INDEX_NAME,
    LINEAR,
    CheckpointMismatch,
    Rule,
    iter_hf_tensors,
    load_model,
    write_safetensors,
)


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.up = sharding.param(jax.random.normal(rngs.params(), (8, 12)), "embed", "mlp")
        self.norm = sharding.param(jnp.ones((8,)), "norm")


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = sharding.param(
            jax.random.normal(rngs.params(), (2, 3, 3, 4, 8)), None, None, None, "conv_in", "embed"
        )
        self.blocks = nnx.List([Block(rngs) for _ in range(3)])


RULES = [
    Rule("enc.patch.weight", "conv", CONV),
    Rule("enc.layers.{i}.up.weight", "blocks.{i}.up", LINEAR),
    Rule("enc.layers.{i}.norm.weight", "blocks.{i}.norm"),
]


def hf_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Tensors in the torch layout the rules expect ([out, in] linears, [O, I, D, H, W] conv)."""
    rng = np.random.default_rng(seed)
    tensors = {"enc.patch.weight": rng.normal(size=(8, 4, 2, 3, 3)).astype(np.float32)}
    for i in range(3):
        tensors[f"enc.layers.{i}.up.weight"] = rng.normal(size=(12, 8)).astype(np.float32)
        tensors[f"enc.layers.{i}.norm.weight"] = rng.normal(size=(8,)).astype(np.float32)
    return tensors


def abstract() -> Tiny:
    return nnx.eval_shape(lambda: Tiny(nnx.Rngs(0)))


def test_rule_templates_work_both_ways():
    rule = Rule("model.layers.{i}.experts.{j}.w", "layers.{i}.moe.{j}.kernel", LINEAR)
    assert rule.match_hf("model.layers.12.experts.3.w") == "layers.12.moe.3.kernel"
    assert rule.match_nnx("layers.12.moe.3.kernel") == "model.layers.12.experts.3.w"
    assert rule.match_hf("model.layers.x.experts.3.w") is None
    assert rule.match_hf("model.layers.1.experts.3.w.extra") is None
    with pytest.raises(ValueError, match="same placeholders"):
        Rule("a.{i}.b", "a.b")


def test_load_transposes_and_iter_inverts(tmp_path):
    tensors = hf_tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = load_model(tmp_path, abstract(), RULES)
    np.testing.assert_array_equal(np.asarray(model.blocks[1].up.get_value()), tensors["enc.layers.1.up.weight"].T)
    np.testing.assert_array_equal(
        np.asarray(model.conv.get_value()), tensors["enc.patch.weight"].transpose(2, 3, 4, 1, 0)
    )
    back = dict(iter_hf_tensors(model, RULES))
    assert back.keys() == tensors.keys()
    for name, array in tensors.items():
        np.testing.assert_array_equal(back[name], array)


def test_sharded_files_with_index_and_mesh_placement(tmp_path):
    tensors = hf_tensors(1)
    weight_map = write_safetensors(tensors.items(), tmp_path, max_shard_bytes=1000)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["weight_map"] == weight_map and set(weight_map) == set(tensors)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = load_model(tmp_path, abstract(), RULES, mesh=mesh, dtype=jnp.bfloat16)
    up = model.blocks[2].up.get_value()
    assert up.dtype == jnp.bfloat16
    assert up.sharding.spec == sharding.logical_to_spec(("embed", "mlp"), (8, 12), mesh)
    assert up.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    np.testing.assert_array_equal(np.asarray(up), tensors["enc.layers.2.up.weight"].T.astype(ml_dtypes.bfloat16))


def test_every_problem_is_reported_at_once(tmp_path):
    tensors = hf_tensors()
    del tensors["enc.layers.2.norm.weight"]
    tensors["enc.layers.0.up.weight"] = tensors["enc.layers.0.up.weight"][:, :5]
    tensors["enc.extra.weight"] = np.zeros((2,), np.float32)
    tensors["enc.layers.7.norm.weight"] = np.zeros((8,), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatch) as info:
        load_model(tmp_path, abstract(), RULES)
    err = info.value
    assert err.missing == ["blocks.2.norm"]
    assert err.unexpected == ["enc.extra.weight", "enc.layers.7.norm.weight (-> blocks.7.norm, not in the model)"]
    assert len(err.mis_shaped) == 1 and err.mis_shaped[0].startswith("enc.layers.0.up.weight [12, 5]")
    assert str(tmp_path) in str(err)
    # ignore_hf skips tensors on purpose (e.g. a tied lm_head some checkpoints still carry)
    del tensors["enc.extra.weight"], tensors["enc.layers.7.norm.weight"]
    tensors["enc.layers.2.norm.weight"] = np.ones((8,), np.float32)
    tensors["enc.layers.0.up.weight"] = np.ones((12, 8), np.float32)
    tensors["lm_head.weight"] = np.ones((3, 3), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = load_model(tmp_path, abstract(), RULES, ignore_hf=["lm_head.weight"])
    np.testing.assert_array_equal(np.asarray(model.blocks[0].up.get_value()), np.ones((8, 12)))


def test_export_refuses_unmapped_parameters():
    with pytest.raises(CheckpointMismatch, match="blocks.0.norm"):
        list(iter_hf_tensors(abstract(), RULES[:2]))  # checked before any value is read
