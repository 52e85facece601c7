"""Qwen2.5-VL HF round trips: load -> export gives identical tensors, transformers loads exports, Orbax sources,
sharded loading, and the `python -m vinci_jax.hf` CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from safetensors import safe_open

from vinci_jax import sharding
from vinci_jax.hf.__main__ import main as cli
from vinci_jax.hf.export import export
from vinci_jax.hf.loader import INDEX_NAME, CheckpointMismatch
from vinci_jax.hf.qwen2_5_vl import export_qwen2_5_vl, load_qwen2_5_vl
from vinci_jax.hf.testing import save_tiny_checkpoint


def read_tensors(path) -> dict[str, np.ndarray]:
    files = sorted(path.glob("*.safetensors"))
    out = {}
    for file in files:
        with safe_open(file, framework="np") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("untied"), seed=3)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return path


def assert_same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_round_trip_is_identical_and_transformers_loads_it(untied, tmp_path):
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    model = load_qwen2_5_vl(untied)
    out = export_qwen2_5_vl(model, tmp_path / "out", dtype="float32", source_dir=untied, max_shard_bytes=200_000)
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / INDEX_NAME).exists()
    assert_same_tensors(read_tensors(untied), read_tensors(out))
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model_max_length": 77}
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    assert type(reloaded) is Qwen2_5_VLForConditionalGeneration
    original = Qwen2_5_VLForConditionalGeneration.from_pretrained(untied)
    for (n1, p1), (n2, p2) in zip(original.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert n1 == n2 and bool((p1 == p2).all()), n1


def test_tied_checkpoint_round_trip(tmp_path):
    src = save_tiny_checkpoint(tmp_path / "tied", tie_word_embeddings=True, num_key_value_heads=1, seed=4)
    model = load_qwen2_5_vl(src)
    assert model.lm_head is None
    out = export_qwen2_5_vl(model, tmp_path / "out", dtype="float32")
    original = read_tensors(src)
    original.pop("lm_head.weight", None)  # transformers may or may not write the tied copy
    assert_same_tensors(original, read_tensors(out))


def test_bfloat16_export_and_sharded_load(untied, tmp_path):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = load_qwen2_5_vl(untied, mesh=mesh, dtype=jnp.bfloat16)
    q = model.model.layers[1].self_attn.q_proj.kernel.get_value()
    assert q.dtype == jnp.bfloat16
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    out = export_qwen2_5_vl(model, tmp_path / "bf16")
    exported, original = read_tensors(out), read_tensors(untied)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert str(exported[name].dtype) == "bfloat16"
    np.testing.assert_allclose(exported[name].astype(np.float32), original[name], rtol=1e-2, atol=1e-6)


def test_orbax_checkpoints_export_like_the_model(untied, tmp_path):
    model = load_qwen2_5_vl(untied)
    state = nnx.state(model, nnx.Param)
    config_json = (untied / "config.json").read_text()

    std = tmp_path / "standard"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(std, state)
    checkpointer.wait_until_finished()
    (std / "config.json").write_text(config_json)

    managed = tmp_path / "managed"
    manager = ocp.CheckpointManager(managed, item_names=("opt_state", "model"))
    opt_state = {"mu": jax.tree.map(jnp.zeros_like, state), "count": jnp.zeros((), jnp.int32)}
    for step in (1, 2):
        manager.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(state),
                                                   opt_state=ocp.args.StandardSave(opt_state)))  # fmt: skip
    manager.wait_until_finished()
    (managed / "config.json").write_text(config_json)

    # the trainer's layout: WORKDIR/checkpoints/<step>/state = {params, opt_state, step}, config.json in WORKDIR
    workdir = tmp_path / "workdir"
    params = state.to_pure_dict()
    train_state = {"params": params, "opt_state": ({"mu": params, "nu": params}, {}), "step": jnp.int32(7)}
    trainer = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state",))
    trainer.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state)))
    trainer.wait_until_finished()
    (workdir / "config.json").write_text(config_json)

    original = read_tensors(untied)
    for src in (std, managed, workdir):
        out = export(src, tmp_path / f"out_{src.name}", dtype="float32")
        assert_same_tensors(original, read_tensors(out))


def test_orbax_export_reports_missing_parameters(untied, tmp_path):
    state = nnx.state(load_qwen2_5_vl(untied), nnx.Param).to_pure_dict()
    del state["model"]["norm"]
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()
    (tmp_path / "ckpt" / "config.json").write_text((untied / "config.json").read_text())
    with pytest.raises(CheckpointMismatch, match="model.norm.scale"):
        export(tmp_path / "ckpt", tmp_path / "out")


def test_load_reports_a_mismatched_config(untied, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for file in untied.iterdir():
        (bad / file.name).write_bytes(file.read_bytes())
    config = json.loads((untied / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 3
    config["text_config"]["intermediate_size"] = 80
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatch) as info:
        load_qwen2_5_vl(bad)
    assert any("model.layers.2." in m for m in info.value.missing)
    assert any("mlp.up_proj.weight [96, 64]" in m for m in info.value.mis_shaped)


def test_cli_check_and_export(untied, tmp_path, capsys):
    assert cli(["check", str(untied)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ok"] and result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0
    # a tolerance below float32 rounding must fail with exit status 1
    assert cli(["check", str(untied), "--tolerance", "1e-12"]) == 1
    assert cli(["export", str(untied), str(tmp_path / "cli_out"), "--dtype", "float32"]) == 0
    assert_same_tensors(read_tensors(untied), read_tensors(tmp_path / "cli_out"))
    assert (tmp_path / "cli_out" / "tokenizer_config.json").exists()
