"""The model-family registry: selection by name or by a checkpoint's config.json, and each family's pieces."""

from __future__ import annotations

import dataclasses
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vinci_jax.models import families
from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
from vinci_jax.models.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from vinci_jax.processing.processor import QwenProcessor
from vinci_jax.processing.qwen3_vl import Qwen3VLProcessor


def _config_dir(tmp_path, name, config):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_hf()))
    return path


def test_resolve_by_name_by_checkpoint_and_default(tmp_path):
    q3 = _config_dir(tmp_path, "q3", Qwen3VLConfig.tiny())
    q25 = _config_dir(tmp_path, "q25", Qwen25VLConfig.tiny())
    assert families.resolve_family("", q3).name == "qwen3_vl"
    assert families.resolve_family(None, q25).name == "qwen2_5_vl"
    assert families.resolve_family("qwen3_vl").name == "qwen3_vl"
    assert families.resolve_family("qwen3_vl", q3).name == "qwen3_vl"
    assert families.resolve_family().name == "qwen2_5_vl"
    assert families.get_family("Qwen2.5-VL").name == "qwen2_5_vl"
    with pytest.raises(ValueError, match="set it to 'qwen3_vl'"):
        families.resolve_family("qwen2_5_vl", q3)
    with pytest.raises(ValueError, match="unknown model family"):
        families.get_family("llava")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="'llava' is not a supported family"):
        families.resolve_family("", tmp_path / "other")


@pytest.mark.parametrize(
    "name, sizes", [("qwen2_5_vl", ("tiny", "3b", "7b", "32b", "72b")), ("qwen3_vl", ("tiny", "2b", "4b", "8b", "32b"))]
)
def test_family_presets_are_its_config_sizes(name, sizes):
    family = families.get_family(name)
    assert family.presets == sizes
    configs = [family.preset(size) for size in sizes]
    assert all(family.owns_config(c) for c in configs) and len(set(configs)) == len(sizes)
    with pytest.raises(ValueError, match="choose one of"):
        family.preset("1t")


@pytest.mark.parametrize(
    "name, config_cls, model_cls, processor_cls, patch",
    [
        ("qwen2_5_vl", Qwen25VLConfig, Qwen25VLForConditionalGeneration, QwenProcessor, 14),
        ("qwen3_vl", Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, 16),
    ],
)
def test_family_pieces(name, config_cls, model_cls, processor_cls, patch, tmp_path):
    family = families.get_family(name)
    config = family.preset("tiny")
    assert isinstance(config, config_cls) and families.family_of_config(config) is family
    assert family.preset(f"{name}_tiny") == config
    path = _config_dir(tmp_path, name, config)
    assert family.read_config(path) == config
    small = config.replace(text=dataclasses.replace(config.text, vocab_size=512), image_token_id=500,
                           vision_start_token_id=501)  # fmt: skip
    model = family.build(small, rngs=nnx.Rngs(0), dtype=jnp.float32)
    assert isinstance(model, model_cls) and families.family_of_model(model) is family
    abstract = family.abstract_model(config)
    names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    assert all(any(rule.match_nnx(n) for rule in family.rules(config)) for n in names)
    image_processor = family.image_processor(min_pixels=32 * 32, max_pixels=64 * 64)
    assert image_processor.patch_size == patch and image_processor.max_pixels == 64 * 64
    assert family.processor_class is processor_cls

    # host-side inputs: one image of 4x6 patches between text, the model runs on them
    merged = 6
    ids = np.asarray([[5, small.vision_start_token_id] + [small.image_token_id] * merged + [7, 8]])
    grid = np.asarray([[1, 4, 6]])
    positions, deltas = family.get_rope_index(ids, grid, config=small)
    assert positions.shape == (3, 1, ids.shape[1]) and int(deltas[0, 0]) == positions.max() + 1 - ids.shape[1]
    patch_dim = 3 * 2 * patch * patch
    pixels = np.random.default_rng(0).normal(size=(24, patch_dim)).astype(np.float32)
    vision = family.prepare_vision_inputs(grid, pixels, small.vision)
    logits = model(jnp.asarray(ids), jnp.asarray(positions), vision_inputs=vision)
    assert logits.shape == (1, ids.shape[1], 512) and bool(jnp.isfinite(logits).all())


def test_from_model_config_and_processor_with(tmp_path):
    family, config = families.from_model_config({"family": "qwen3_vl", "preset": "qwen3_vl_8b", "hf_dir": ""})
    assert family.name == "qwen3_vl" and config == Qwen3VLConfig.preset("8b")
    q3 = _config_dir(tmp_path, "q3", Qwen3VLConfig.tiny())
    family, config = families.from_model_config({"family": "", "preset": "tiny", "hf_dir": str(q3)})
    assert family.name == "qwen3_vl" and config == Qwen3VLConfig.tiny()
    family, config = families.from_model_config({"preset": "tiny"})
    assert family.name == "qwen2_5_vl" and config == Qwen25VLConfig.tiny()
    processor = families.get_family("qwen3_vl").processor_with(min_pixels=32 * 32, max_pixels=128 * 128)
    assert isinstance(processor, Qwen3VLProcessor) and processor.image_processor.max_pixels == 128 * 128
    assert processor.apply_chat_template([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user\n")


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen3_vl"])
def test_freeze_groups_split_the_vision_tower_from_its_mergers(name):
    family = families.get_family(name)
    paths = [
        "/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(family.abstract_model(family.preset("tiny"))))
    ]
    vision = {p for p in paths if re.match(family.freeze_groups["vision"], p)}
    merger = {p for p in paths if re.match(family.freeze_groups["merger"], p)}
    visual = {p for p in paths if p.startswith("visual/")}
    assert vision and merger and not vision & merger and vision | merger == visual
    assert all("merger" in p for p in merger) and not any("merger" in p for p in vision)
    assert any("blocks/0/attn/qkv" in p for p in vision)
