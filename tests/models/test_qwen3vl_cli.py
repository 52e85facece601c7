"""`python -m vinci_jax.hf check|export` on Qwen3-VL directories (HF and Orbax), through the CLI entry point."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from safetensors.numpy import load_file

from vinci_jax.hf.__main__ import main as cli
from vinci_jax.hf.loader import hf_tensor_files
from vinci_jax.hf.qwen3_vl import load_qwen3_vl
from vinci_jax.models.qwen3_vl.testing import save_tiny_checkpoint


def read_tensors(directory) -> dict[str, np.ndarray]:
    return {k: v for f in sorted(set(hf_tensor_files(directory).values())) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("qwen3vl_cli"), deepstack_visual_indexes=(0, 2))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return path


def test_cli_check_and_export_hf_dir(checkpoint, tmp_path, capsys):
    assert cli(["check", str(checkpoint)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ok"] and result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0
    assert cli(["export", str(checkpoint), str(tmp_path / "out"), "--dtype", "float32"]) == 0
    original, written = read_tensors(checkpoint), read_tensors(tmp_path / "out")
    assert sorted(original) == sorted(written)
    for key, value in original.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text()) == {"model_max_length": 77}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen3_vl"


def test_cli_export_orbax_checkpoint(checkpoint, tmp_path):
    model = load_qwen3_vl(checkpoint)
    state = nnx.state(model, nnx.Param)
    std = tmp_path / "standard"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(std, jax.tree.map(jnp.asarray, state))
    checkpointer.wait_until_finished()
    (std / "config.json").write_text((checkpoint / "config.json").read_text())
    assert cli(["export", str(std), str(tmp_path / "out"), "--dtype", "float32"]) == 0
    original, written = read_tensors(checkpoint), read_tensors(tmp_path / "out")
    assert sorted(original) == sorted(written)
    for key, value in original.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
