"""`hf export` keeps the source's dtype unless told otherwise (an fp32 source was once silently written as bf16)."""

from __future__ import annotations

import json

import numpy as np
from safetensors import safe_open

from vinci_jax.hf.__main__ import main as cli
from vinci_jax.hf.export import hf_dir_dtype, params_dtype
from vinci_jax.hf.testing import save_tiny_checkpoint


def _dtypes(path) -> set[str]:
    out = set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            out.update(str(f.get_tensor(k).dtype).removeprefix("torch.") for k in f.keys())
    return out


def test_export_keeps_fp32_without_dtype_and_casts_with_it(tmp_path, capsys):
    src = save_tiny_checkpoint(tmp_path / "src", seed=5)
    assert hf_dir_dtype(src) == "float32"
    assert cli(["export", str(src), str(tmp_path / "kept")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dtype"] == "source"
    assert _dtypes(tmp_path / "kept") == {"float32"}
    assert cli(["export", str(src), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    assert _dtypes(tmp_path / "bf16") == {"bfloat16"}
    assert hf_dir_dtype(tmp_path / "bf16") == "bfloat16"


def test_params_dtype_is_the_majority_floating_dtype():
    import ml_dtypes

    params = {"a": np.zeros((4, 4), ml_dtypes.bfloat16), "b": np.zeros(3, np.float32), "i": np.zeros(99, np.int32)}
    assert params_dtype(params) == "bfloat16"
    assert params_dtype({"b": np.zeros(3, np.float32)}) == "float32"
