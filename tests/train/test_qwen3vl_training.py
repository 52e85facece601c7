"""Qwen3-VL through the trainers: `--config.model.family=qwen3_vl` (or a Qwen3-VL HF dir) is all a user changes.

The command-line chain runs on a tiny transformers-written Qwen3-VL checkpoint with the real Qwen vocabulary and
processor files: `hf check` -> SFT -> `hf export` of the SFT workdir -> ViRL from that workdir -> its HF export, which
transformers loads. The unit tests pin the pieces: the family decides the model, the processor (patch 16), the freeze
groups (deepstack mergers are mergers) and the files a workdir gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file

from vinci_jax.hf.loader import hf_tensor_files
from vinci_jax.train import optimizer as opt_lib

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
    return {k: v for f in sorted(set(hf_tensor_files(directory).values())) for k, v in load_file(f).items()}


def _model_block(**overrides) -> ml_collections.ConfigDict:
    base = {"family": "", "preset": "tiny", "hf_dir": "", "dtype": "float32", "param_dtype": "float32",
            "remat": "none", "freeze_vision": False, "freeze_merger": False, "freeze": ""}  # fmt: skip
    return ml_collections.ConfigDict({**base, **overrides})


def _mesh():
    from vinci_jax import sharding

    return sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])


# ---- command line -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qwen3vl_ckpt")
    proc = _run("-m", "vinci_jax.models.qwen3_vl.testing", str(out))
    assert json.loads(proc.stdout.strip().splitlines()[-1])["model_type"] == "qwen3_vl"
    return out


@pytest.fixture(scope="module")
def sft_workdir(checkpoint, sft_corpus, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("qwen3vl_sft") / "run"
    _run(
        "-m", "vinci_jax.launch", "--config", "configs/sft.py:tiny", f"--config.model.hf_dir={checkpoint}",
        f"--config.workdir={workdir}", "--config.num_steps=2", f"--config.data.train_path={sft_corpus}",
        "--config.data.seq_len=128", "--config.data.patches_per_row=128", "--config.optimizer.warmup_steps=0",
        "--config.eval_every=2", "--config.checkpoint.async_save=False", "--config.progress=False",
    )  # fmt: skip
    return workdir


def test_hf_check_accepts_the_tiny_checkpoint(checkpoint):
    result = json.loads(_run("-m", "vinci_jax.hf", "check", str(checkpoint)).stdout.strip().splitlines()[-1])
    assert result["ok"] and result["top1_agreement"] == 1.0


def test_sft_trains_a_qwen3vl_checkpoint_and_its_workdir_exports(checkpoint, sft_workdir, tmp_path):
    records = [json.loads(line) for line in (sft_workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss_tokens"] > 0 for r in records)
    assert np.isfinite(records[-1]["val_loss"])
    assert (sft_workdir / "checkpoints" / "2").is_dir()
    # the workdir describes itself: the model's config.json and the Qwen3-VL processor files
    assert json.loads((sft_workdir / "config.json").read_text())["model_type"] == "qwen3_vl"
    preprocessor = json.loads((sft_workdir / "preprocessor_config.json").read_text())
    assert preprocessor["patch_size"] == 16 and (sft_workdir / "tokenizer.json").is_file()

    out = tmp_path / "sft_export"
    _run("-m", "vinci_jax.hf", "export", str(sft_workdir), str(out), "--dtype", "float32")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen3_vl"
    assert (out / "tokenizer.json").is_file() and (out / "preprocessor_config.json").is_file()
    initial, trained = read_tensors(checkpoint), read_tensors(out)
    assert sorted(initial) == sorted(trained)
    changed = [k for k in initial if not np.array_equal(initial[k], trained[k])]
    assert "lm_head.weight" in changed and any(".deepstack_merger_list." in k for k in changed)

    from vinci_jax.hf.export import restore_orbax_params

    params, config = restore_orbax_params(sft_workdir)
    assert type(config).__name__ == "Qwen3VLConfig"
    np.testing.assert_array_equal(trained["lm_head.weight"], params["lm_head.kernel"].T)


def test_virl_from_the_sft_workdir_exports_a_qwen3vl_that_transformers_loads(sft_workdir, tmp_path):
    from vinci_data.synth.build import SynthConfig, ensure_synth

    corpus = tmp_path / "rl_corpus"
    synth = SynthConfig(size=8, seed=3, domains=("svg",), difficulty_weights=(1.0, 0.0, 0.0), refine_fraction=0.0,
                        val_fraction=0.0, test_fraction=0.25)  # fmt: skip
    ensure_synth(str(corpus), synth, num_workers=1)
    export = tmp_path / "virl_export"
    proc = _run(
        "-m", "vinci_jax.launch", "--config", "configs/virl.py:tiny", f"--config.model.init_from={sft_workdir}",
        "--config.model.family=qwen3_vl", f"--config.data.path={corpus}", f"--config.workdir={tmp_path / 'virl'}",
        "--config.num_steps=1", "--config.data.prompts_per_step=2", "--config.rollout.n=2",
        "--config.rollout.max_new_tokens=4", "--config.rollout.chunk_prompts=1", "--config.eval.prompts=2",
        "--config.checkpoint.async_save=False", "--config.render.num_workers=1", "--config.progress=False",
        f"--config.export_dir={export}",
    )  # fmt: skip
    assert "[virl] exported the policy" in proc.stdout
    hf_config = json.loads((export / "config.json").read_text())
    assert hf_config["model_type"] == "qwen3_vl"
    assert json.loads((export / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"

    # it started from the SFT weights (one step with lr 1e-4 moves them by ~1e-4 at most), not from a random init
    from vinci_jax.hf.export import restore_orbax_params

    sft_params, _ = restore_orbax_params(sft_workdir)
    virl = read_tensors(export)
    np.testing.assert_allclose(virl["lm_head.weight"], sft_params["lm_head.kernel"].T, atol=1e-3)

    import torch
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(export, dtype=torch.float32)
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), virl["lm_head.weight"])


# ---- units ------------------------------------------------------------------------------------------------------


def test_model_factory_builds_the_configured_family():
    from vinci_jax.models.qwen2_5_vl import Qwen25VLForConditionalGeneration
    from vinci_jax.models.qwen3_vl import Qwen3VLForConditionalGeneration
    from vinci_jax.train.model import ModelFactory

    factory = ModelFactory(_model_block(family="qwen3_vl"), _mesh(), seed=0)
    assert isinstance(factory.abstract, Qwen3VLForConditionalGeneration)
    assert factory.family.name == "qwen3_vl" and factory.abstract.config.vision.patch_size == 16
    # an older model block without a `family` key stays Qwen2.5-VL
    legacy = _model_block()
    del legacy["family"]
    assert isinstance(ModelFactory(legacy, _mesh(), seed=0).abstract, Qwen25VLForConditionalGeneration)


def test_family_and_checkpoint_must_agree(tmp_path):
    from vinci_jax.models.qwen3_vl import Qwen3VLConfig
    from vinci_jax.train.model import resolve_model

    (tmp_path / "config.json").write_text(json.dumps(Qwen3VLConfig.tiny().to_hf()))
    family, config = resolve_model(_model_block(hf_dir=str(tmp_path)))
    assert family.name == "qwen3_vl" and config == Qwen3VLConfig.tiny()
    with pytest.raises(ValueError, match="model.family='qwen2_5_vl' but .* 'qwen3_vl' checkpoint"):
        resolve_model(_model_block(family="qwen2_5_vl", hf_dir=str(tmp_path)))


def test_init_from_a_training_workdir_takes_its_config_json(tmp_path):
    from vinci_jax.models.qwen3_vl import Qwen3VLConfig
    from vinci_jax.policy import checkpoint_config_dir, load_processor
    from vinci_jax.processing.qwen3_vl import Qwen3VLProcessor
    from vinci_jax.train.model import resolve_model, write_model_files

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "4" / "state").mkdir(parents=True)
    config = Qwen3VLConfig.tiny().replace(tie_word_embeddings=True)
    write_model_files(workdir, config)
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints", "config.json"]  # no staging left behind
    for path in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "4" / "state"):
        assert checkpoint_config_dir(path) == workdir
        family, found = resolve_model(_model_block(init_from=str(path)))
        assert family.name == "qwen3_vl" and found == config
    assert isinstance(load_processor(workdir), Qwen3VLProcessor)  # no tokenizer files: the family's default
    # a config.json above a directory that is not a training workdir is not this checkpoint's
    (tmp_path / "elsewhere" / "ckpt").mkdir(parents=True)
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_config_dir(tmp_path / "elsewhere" / "ckpt") is None
    write_model_files(tmp_path / "standin", None)  # no HF config: nothing written
    assert not (tmp_path / "standin").exists()


def test_freeze_merger_covers_the_deepstack_mergers():
    from flax import nnx

    from vinci_jax.models.families import get_family
    from vinci_jax.models.qwen3_vl import Qwen3VLConfig

    family = get_family("qwen3_vl")
    params = nnx.state(family.abstract_model(Qwen3VLConfig.tiny()), nnx.Param).to_pure_dict()

    def frozen(**flags) -> set[str]:
        block = _model_block(family="qwen3_vl", **flags)
        mask = opt_lib.trainable_mask(params, opt_lib.freeze_patterns(block))
        leaves = jax.tree_util.tree_flatten_with_path(mask)[0]
        return {opt_lib.path_str(path).split("/")[1] for path, trainable in leaves if not trainable}

    deepstack = "deepstack_merger_list"
    assert deepstack in frozen(freeze_merger=True) and "merger" in frozen(freeze_merger=True)
    assert "blocks" not in frozen(freeze_merger=True)
    assert deepstack not in frozen(freeze_vision=True) and "merger" not in frozen(freeze_vision=True)
    assert "blocks" in frozen(freeze_vision=True)
    assert frozen() == set()
    # explicit groups (what the trainers pass: the factory's family) win over the block's family
    block = _model_block(family="qwen3_vl", freeze_merger=True)
    assert opt_lib.freeze_patterns(block, get_family("qwen2_5_vl").freeze_groups) == [r"^visual/merger/"]


def test_sft_pipeline_featurizes_with_the_family_processor(sft_corpus):
    from vinci_jax.input_pipeline import SFTConfig
    from vinci_jax.input_pipeline.sft import SFTFeaturizer, default_processor
    from vinci_jax.input_pipeline.sources import array_record_source
    from vinci_jax.processing.qwen3_vl import Qwen3VLProcessor

    sizes = {"min_pixels": 56 * 56, "max_pixels": 160 * 160}
    config = SFTConfig(data_dir="", family="qwen3_vl", seq_len=4096, **sizes)
    qwen3 = SFTFeaturizer(default_processor(config), config)
    assert isinstance(qwen3.processor, Qwen3VLProcessor)
    assert "<think>" in qwen3.processor.tokenizer.get_vocab()  # Qwen3's offline tokenizer, not Qwen2.5's
    raw = array_record_source(str(sft_corpus), "train")[0]
    sample = qwen3(raw)
    assert sample is not None and sample["pixel_values"].shape[-1] == 3 * 2 * 16 * 16
    config = SFTConfig(data_dir="", seq_len=4096, **sizes)
    qwen25 = SFTFeaturizer(default_processor(config), config)
    assert qwen25(raw)["pixel_values"].shape[-1] == 3 * 2 * 14 * 14
